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


class _KafkaStream(tweepy.StreamingClient):
    """Hands every raw payload to the shared handler; tweepy does the reconnecting."""

    def __init__(self, bearer_token: str, handler: TweetHandler) -> None:
        super().__init__(bearer_token, wait_on_rate_limit=True)
        self.handler = handler

    def on_data(self, raw_data: bytes) -> None:
        self.handler.handle(raw_data, ingest_ms=to_millis(datetime.now(UTC)))

    def on_errors(self, errors: list) -> None:
        logger.warning("stream errors: %s", errors)


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
    existing = stream.get_rules().data or []
    if existing:
        stream.delete_rules([rule.id for rule in existing])
    stream.add_rules([tweepy.StreamRule(rule) for rule in settings.filter_rules])
    try:
        stream.filter(tweet_fields=TWEET_FIELDS, user_fields=USER_FIELDS, expansions=EXPANSIONS)
    finally:
        stream.disconnect()
        handler.flush()
        producer.close()
    return handler.counts
