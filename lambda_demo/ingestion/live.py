"""The live source: tweepy's ``StreamingClient`` on the X API v2 filtered stream.

It feeds the very handler the replay uses, so what you learn offline is what runs live.
The ingest time of a live tweet is simply the wall clock when it arrived.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import tweepy

from lambda_demo.clients import kafka_io
from lambda_demo.errors import SettingsError
from lambda_demo.ingestion.clock import to_millis
from lambda_demo.ingestion.handler import IngestCounts, TweetHandler
from lambda_demo.settings import Settings, get_settings

logger = logging.getLogger(__name__)

TWEET_FIELDS = ["created_at", "public_metrics", "entities", "lang"]
USER_FIELDS = ["location", "public_metrics"]
EXPANSIONS = ["author_id"]

RULE_TAG = "lambda-demo"
"""The tag on every stream rule ``live`` adds, so it only ever removes rules of its own."""


class _KafkaStream(tweepy.StreamingClient):
    """Hands every raw payload to the shared handler; tweepy does the reconnecting."""

    def __init__(self, bearer_token: str, handler: TweetHandler) -> None:
        super().__init__(bearer_token, wait_on_rate_limit=True)
        self.handler = handler

    def on_data(self, raw_data: bytes) -> None:
        self.handler.handle(raw_data, ingest_ms=to_millis(datetime.now(UTC)))

    def on_errors(self, errors: list) -> None:
        logger.warning("stream errors: %s", errors)


def rule_changes(
    existing: list[tweepy.StreamRule], wanted: list[str]
) -> tuple[list[str], list[str]]:
    """Which rule ids to delete and which rule values to add so ours equal ``wanted``.

    A filtered-stream rule belongs to the whole developer account, which other programs may
    share: only rules tagged `RULE_TAG` are ours to remove.
    """
    ours = [rule for rule in existing if rule.tag == RULE_TAG]
    stale = [rule.id for rule in ours if rule.value not in wanted]
    present = {rule.value for rule in ours}
    return stale, [value for value in wanted if value not in present]


def _sync_rules(stream: tweepy.StreamingClient, wanted: list[str]) -> None:
    """Make the account's ``lambda-demo`` rules equal ``wanted``; leave every other rule."""
    existing = stream.get_rules().data or []
    stale, missing = rule_changes(existing, wanted)
    if stale:
        stream.delete_rules(stale)
    if missing:
        stream.add_rules([tweepy.StreamRule(value, tag=RULE_TAG) for value in missing])
    foreign = [rule.value for rule in existing if rule.tag != RULE_TAG]
    if foreign:
        logger.warning(
            "the account has %d stream rules not made by lambda-demo (%s): tweets matching "
            "them arrive too and are ingested",
            len(foreign),
            ", ".join(foreign),
        )


def live(settings: Settings | None = None) -> IngestCounts:
    """Stream matching tweets into Kafka until Ctrl-C."""
    settings = settings or get_settings()
    if settings.x_bearer_token is None:
        raise SettingsError(
            "No X API bearer token: set LAMBDA_DEMO_X_BEARER_TOKEN (in the environment or a "
            "git-ignored .env). Without one, `lambda-demo replay` plays recorded tweets through "
            "the same code path."
        )
    kafka_io.ensure_topics(settings)
    producer = kafka_io.producer(settings)
    handler = TweetHandler.for_settings(producer, settings)
    stream = _KafkaStream(settings.x_bearer_token.get_secret_value(), handler)
    _sync_rules(stream, list(settings.filter_rules))
    try:
        stream.filter(tweet_fields=TWEET_FIELDS, user_fields=USER_FIELDS, expansions=EXPANSIONS)
    finally:
        stream.disconnect()
        handler.flush()
        producer.close()
    return handler.counts
