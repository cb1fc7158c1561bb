"""The live source: tweepy's ``StreamingClient`` on the X API v2 streams, into Kafka.

SYNOPSIS
    lambda-demo live [--sample]

    ingest = start_live(settings, sample=False)   # from Python or a notebook
    ingest.counts, ingest.connects, ingest.closes, ingest.stop()

DESCRIPTION
    Reads the filtered stream with the rules in ``LAMBDA_DEMO_FILTER_RULES`` or, with
    ``--sample``, the volume stream (every tweet, no rules), and hands every line to the very
    handler the replay uses, so what you learn offline is what runs live. The ingest time of
    a live tweet is the wall clock when it arrived; a line that is not a valid tweet (the API's
    own error messages included) is dead-lettered with its reason, exactly as replay does.

    Before streaming, the account's rules tagged `RULE_TAG` are made equal to the configured
    ones; rules with another tag (or none) belong to other programs and are left alone.

    tweepy reconnects by itself: at once after the server closes a stream, with a growing
    pause after a network error, and after at least a minute on 429 Too Many Requests. Each
    disconnect, reconnect and error is reported in words on the ``lambda_demo`` logger; a
    refused token (401) or access tier (403) stops the stream with an `XApiError`.

    ``live`` runs until Ctrl-C (or SIGTERM under the CLI), then flushes the producer and
    returns what it produced. `start_live` runs the stream in a background thread instead and
    returns a handle to stop it, for notebooks and tests.

ENVIRONMENT
    LAMBDA_DEMO_X_BEARER_TOKEN
        The bearer token. The real API's streams need a paid access tier (Pro or Enterprise);
        the local server accepts any token.
    LAMBDA_DEMO_X_API_URL
        Where tweepy's requests go. The default is the real API; set it to the URL that
        ``lambda-demo xapi serve`` prints to run offline. tweepy has the real host built in,
        so a requests transport adapter mounted on the client's session rewrites the host
        (`ApiRedirect`): a public mechanism of requests, no patching of tweepy.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from typing import Any

import requests
import tweepy
from kafka import KafkaProducer
from requests.adapters import HTTPAdapter

from lambda_demo.clients import kafka_io
from lambda_demo.contract import Rejected
from lambda_demo.errors import SettingsError, XApiError
from lambda_demo.ingestion.clock import to_millis
from lambda_demo.ingestion.handler import IngestCounts, TweetHandler
from lambda_demo.settings import X_API_URL, Settings, get_settings

logger = logging.getLogger(__name__)

TWEET_FIELDS = ["created_at", "public_metrics", "entities", "lang"]
USER_FIELDS = ["location", "public_metrics"]
EXPANSIONS = ["author_id"]

RULE_TAG = "lambda-demo"
"""The tag on every stream rule ``live`` adds, so it only ever removes rules of its own."""

# What a refused stream connection means, and whether retrying can help.
_REFUSALS = {
    400: ("the stream refused the request's parameters (400 Bad Request)", True),
    401: (
        "the X API refused the bearer token (401 Unauthorized): check LAMBDA_DEMO_X_BEARER_TOKEN",
        True,
    ),
    403: (
        "the X API refused access to the stream (403 Forbidden): streams need a paid access "
        "tier (Pro or Enterprise) on the X developer portal",
        True,
    ),
    429: (
        "too many connections (429 Too Many Requests): tweepy waits at least a minute, then "
        "reconnects",
        False,
    ),
}


class ApiRedirect(HTTPAdapter):
    """A transport adapter that sends requests for tweepy's API host to another base URL.

    Mounted on a ``requests.Session`` for ``https://api.twitter.com/``, it receives every
    request tweepy makes there and rewrites the start of its URL; path, query, headers and
    body go on unchanged. Proxies are looked up again for the new address, so a proxy
    chosen for the real API is not used for a local server (``NO_PROXY`` is honoured).
    """

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        request.url = self.base_url + request.url[len(X_API_URL) :]
        kwargs["proxies"] = requests.utils.get_environ_proxies(request.url)
        return super().send(request, **kwargs)


class _KafkaStream(tweepy.StreamingClient):
    """Hands every raw line to the shared handler and reports the stream's life in words."""

    def __init__(self, bearer_token: str, handler: TweetHandler, *, where: str) -> None:
        super().__init__(bearer_token, wait_on_rate_limit=True, daemon=True)
        self.handler = handler
        self.where = where
        self.connects = 0
        self.closes = 0
        self.fatal: str | None = None
        self._lock = threading.Lock()
        self._stopped = False

    def on_data(self, raw_data: bytes) -> None:
        ingest_ms = to_millis(datetime.now(UTC))
        with self._lock:  # `stop` waits for the line in hand, then no line is handled
            if self._stopped:
                return
            routed = self.handler.route(raw_data)
            self.handler.handle(raw_data, ingest_ms=ingest_ms, routed=routed)
        if routed is not None and isinstance(routed[3], Rejected):
            _report_stream_message(raw_data)

    def stop(self) -> None:
        """Handle no more lines (the one in hand finishes), and let tweepy's loop end."""
        with self._lock:
            self._stopped = True
        self.disconnect()

    def on_connect(self) -> None:
        self.connects += 1
        if self.connects > 1:
            logger.warning("reconnected to the stream at %s", self.where)
        else:
            logger.info("connected to the stream at %s", self.where)

    def on_closed(self, response: requests.Response) -> None:
        self.closes += 1
        if self._stopped:
            return  # after `stop`, a close is the end, not news
        logger.warning("the stream at %s was closed by the server; tweepy reconnects", self.where)

    def on_connection_error(self) -> None:
        if self._stopped:
            return
        logger.warning(
            "cannot reach the stream at %s (refused, reset or timed out); tweepy retries "
            "with a growing pause",
            self.where,
        )

    def on_request_error(self, status_code: int) -> None:
        words, fatal = _REFUSALS.get(
            status_code, (f"the stream answered HTTP {status_code}; tweepy retries", False)
        )
        if fatal:
            self.fatal = f"{words} ({self.where})"
            self.disconnect()
        logger.warning("%s (%s)", words, self.where)

    def on_exception(self, exception: Exception) -> None:
        self.fatal = f"the live stream stopped on an unexpected error: {exception!r}"
        logger.error(self.fatal, exc_info=exception)


def _report_stream_message(raw: bytes) -> None:
    """Say in words what an error message from the API means (it is dead-lettered too)."""
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError):
        return
    errors = message.get("errors") if isinstance(message, dict) else None
    for error in errors if isinstance(errors, list) else []:
        if not isinstance(error, dict):
            continue
        if error.get("title") == "operational-disconnect":
            logger.warning(
                "the X API announced an operational disconnect (a server restart on its side): "
                "the stream closes and tweepy reconnects; tweets meanwhile are not re-sent"
            )
        else:
            logger.warning("the X API sent an error instead of a tweet: %s", error)


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
        answer = stream.add_rules([tweepy.StreamRule(value, tag=RULE_TAG) for value in missing])
        _check_added(answer.errors)
    foreign = [rule.value for rule in existing if rule.tag != RULE_TAG]
    if foreign:
        logger.warning(
            "the account has %d stream rules not made by lambda-demo (%s): tweets matching "
            "them arrive too and are ingested",
            len(foreign),
            ", ".join(foreign),
        )


def _check_added(errors: list[dict]) -> None:
    """Refuse to stream with a rule the API rejected; a duplicate of a foreign rule is fine."""
    invalid = [e for e in errors if e.get("title") != "DuplicateRule"]
    for error in errors:
        if error.get("title") == "DuplicateRule":
            logger.warning(
                "the rule %r already exists on the account under another tag (id %s): its "
                "tweets arrive anyway, but lambda-demo will not remove it",
                error.get("value"),
                error.get("id"),
            )
    if invalid:
        reasons = "; ".join(
            f"{e.get('value')!r}: {', '.join(e.get('details') or [e.get('title', '?')])}"
            for e in invalid
        )
        raise SettingsError(
            f"The X API refused the stream rules: {reasons}. Fix LAMBDA_DEMO_FILTER_RULES "
            "(a JSON list of rules); until then no rule was added."
        )


def _connect(
    stream: _KafkaStream, settings: Settings, *, sample: bool, base_url: str
) -> threading.Thread:
    """Sync the rules (filtered stream only) and start tweepy's stream thread."""
    try:
        if not sample:
            _sync_rules(stream, list(settings.filter_rules))
        connect = stream.sample if sample else stream.filter
        return connect(
            threaded=True,
            tweet_fields=TWEET_FIELDS,
            user_fields=USER_FIELDS,
            expansions=EXPANSIONS,
        )
    except requests.ConnectionError as exc:
        raise XApiError(
            f"Cannot reach the X API at {base_url} ({type(exc).__name__}). Is "
            "`lambda-demo xapi serve` running there? Unset LAMBDA_DEMO_X_API_URL for the real "
            "API."
        ) from exc
    except tweepy.HTTPException as exc:
        answer = " - ".join(
            [f"{exc.response.status_code} {exc.response.reason}", *exc.api_messages]
        )
        raise XApiError(
            f"The X API at {base_url} refused the stream rules request ({answer}). Check "
            "LAMBDA_DEMO_X_BEARER_TOKEN and your access tier."
        ) from exc


class LiveIngest:
    """A running live source: tweepy's stream thread feeding the handler, until `stop`."""

    def __init__(
        self,
        stream: _KafkaStream,
        thread: threading.Thread,
        producer: KafkaProducer,
        handler: TweetHandler,
    ) -> None:
        self._stream = stream
        self._thread = thread
        self._producer = producer
        self._handler = handler
        self._counts: IngestCounts | None = None

    @property
    def counts(self) -> IngestCounts:
        """What was read, produced and dead-lettered so far."""
        return self._handler.counts

    @property
    def connects(self) -> int:
        """Successful connections so far (more than one: tweepy reconnected)."""
        return self._stream.connects

    @property
    def closes(self) -> int:
        """Streams closed by the server so far (every line before the close was handled)."""
        return self._stream.closes

    @property
    def problem(self) -> str | None:
        """Why the stream gave up (a refused token or access tier), in words; else None."""
        return self._stream.fatal

    def wait(self) -> None:
        """Block until the stream ends: after `stop`, or when it gives up (see `problem`)."""
        self._thread.join()

    def stop(self) -> IngestCounts:
        """Stop streaming, wait for the producer's acknowledgements, and return the counts.

        The line in hand is finished; lines after it are not handled. tweepy's thread may
        still be waiting for the next line from the server: it ends on its own then.
        """
        if self._counts is None:
            self._stream.stop()
            self._thread.join(timeout=1)
            self._handler.flush()
            self._producer.close()
            self._counts = self._handler.counts
        return self._counts


def start_live(settings: Settings | None = None, *, sample: bool = False) -> LiveIngest:
    """Sync the rules (unless ``sample``), connect, and stream into Kafka in a thread."""
    settings = settings or get_settings()
    if settings.x_bearer_token is None or not settings.x_bearer_token.get_secret_value().strip():
        raise SettingsError(
            "No X API bearer token: set LAMBDA_DEMO_X_BEARER_TOKEN (in the environment or a "
            "git-ignored .env); any token works with `lambda-demo xapi serve`. Without one, "
            "`lambda-demo replay` plays recorded tweets through the same code path."
        )
    base_url = settings.x_api_url.rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise SettingsError(
            f"LAMBDA_DEMO_X_API_URL must be an http:// or https:// URL, got {base_url!r}."
        )
    kafka_io.ensure_topics(settings)
    producer = kafka_io.producer(settings)
    handler = TweetHandler.for_settings(producer, settings)
    endpoint = "sample" if sample else "search"
    stream = _KafkaStream(
        settings.x_bearer_token.get_secret_value(),
        handler,
        where=f"{base_url}/2/tweets/{endpoint}/stream",
    )
    if base_url != X_API_URL:
        stream.session.mount(X_API_URL + "/", ApiRedirect(base_url))
    try:
        thread = _connect(stream, settings, sample=sample, base_url=base_url)
    except BaseException:
        producer.close()
        raise
    return LiveIngest(stream, thread, producer, handler)


def live(settings: Settings | None = None, *, sample: bool = False) -> IngestCounts:
    """Stream tweets into Kafka until Ctrl-C or SIGTERM; returns what was produced.

    Raises `XApiError` if the API refuses the token or the access tier.
    """
    ingest = start_live(settings, sample=sample)
    try:
        ingest.wait()
    except KeyboardInterrupt:
        logger.info("stopping the live stream")
    counts = ingest.stop()
    if ingest.problem is not None:
        raise XApiError(ingest.problem)
    return counts
