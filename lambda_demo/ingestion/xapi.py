"""A local X API v2 stream server: ``live`` for real, offline and without a paid token.

SYNOPSIS
    lambda-demo xapi serve [--file PATH ...] [--speedup X] [--port N] [--once]

    server = serve([path], speedup=0, once=True)   # from Python or a notebook
    server.url, server.sent, server.disconnect(), server.wait(), server.stop()

DESCRIPTION
    The X API's filtered stream needs a paid access tier and the internet; this server speaks
    the same HTTP wire protocol on 127.0.0.1 for the part of it that ``lambda-demo live``
    (tweepy's ``StreamingClient``) uses, so the live path runs unchanged against recorded
    tweets. Point ``live`` at it with ``LAMBDA_DEMO_X_API_URL=<server.url>`` and any bearer
    token.

    It plays JSONL files (default: the repository's sample) on the replay's simulated clock
    (`lambda_demo.ingestion.clock`): the clock starts when the first client connects and runs
    ``speedup`` times faster than the wall clock; ``speedup=0`` sends as fast as the clients
    read. As on the real API, a tweet played while no client is connected is gone: nothing is
    buffered for a later connection. With ``--once`` (``once=True``) the server stops after
    the files are played: each open stream is closed, so clients see the end of the
    response, and then the server exits.

    What is sent is recorded in `XapiServer.sent` (file line numbers, in the order they were
    written to a client), so a test can compare what arrived in Kafka with exactly what the
    server sent while a client was connected.

ENDPOINTS
    Every request needs ``Authorization: Bearer <token>`` (any token); without one the
    answer is 401.

    GET  /2/tweets/search/stream/rules [?ids=ID,...]
        The rules, as ``{"data": [{"id", "value", "tag"}], "meta": {"sent", "result_count"}}``.
    POST /2/tweets/search/stream/rules [?dry_run=true]
        ``{"add": [{"value", "tag"}]}`` or ``{"delete": {"ids": [...]}}``; the answer has the
        created rules under ``data`` and ``meta.summary`` (created, not_created, valid,
        invalid; or deleted, not_deleted). A rule the language below cannot parse comes back
        under ``errors`` (``invalid-rules``, with the reason in ``details``) and, as on the
        real API, then no rule of that request is created; a value already present is a
        ``DuplicateRule`` error. ``dry_run`` answers the same without changing anything.
        Rule ids are 19-digit strings.
    GET  /2/tweets/search/stream
        The filtered stream: every played tweet that matches at least one rule, with
        ``matching_rules`` (each rule's ``id``, and its ``tag`` if it has one).
    GET  /2/tweets/sample/stream
        The volume stream: every played tweet, no rules.

    Both streams send one JSON object per line, ended by ``\\r\\n``, in HTTP chunked
    encoding, and a bare ``\\r\\n`` keep-alive after `KEEP_ALIVE_SECONDS` without data.
    They honour ``tweet.fields``, ``user.fields`` and ``expansions`` as the real API does:
    ``data`` keeps ``id``, ``text`` and ``edit_history_tweet_ids`` plus the requested tweet
    fields (and ``author_id`` when ``expansions=author_id``), ``includes.users`` comes only
    with ``expansions=author_id`` and keeps ``id``, ``name`` and ``username`` plus the
    requested user fields. A field name the real API does not know is a 400 error; the other
    expansions are accepted and add nothing (the sample has no media, polls or places).
    A file line that is not a JSON object with a ``data`` object is sent as it is, on both
    streams, so the dead-letter path sees the garbage replay sees.

    Connecting to a stream more than ``connections_per_window`` times in
    ``window_seconds`` (default 50 in 15 minutes, the real limit) answers 429 Too Many
    Requests; every stream response carries ``x-rate-limit-limit``,
    ``x-rate-limit-remaining`` and ``x-rate-limit-reset`` (epoch seconds).

    `XapiServer.disconnect` sends every connected client the real API's
    ``operational-disconnect`` message and closes the stream, as X does when it restarts a
    server; tweepy then reconnects.

THE RULE LANGUAGE
    A small subset of X's, with X's precedence (AND binds tighter than OR):

    ``kafka``            a keyword: matches the tweet's text word by word, ignoring case
                         (``apple`` matches "Apple!" but not "pineapple")
    ``"big data"``       an exact phrase: the words in this order
    ``#Kafka``           a hashtag of the tweet (``entities.hashtags``), ignoring case
    ``lang:en``          the tweet's language; narrows a rule, cannot stand alone
    ``-term``            negation; narrows a rule, cannot stand alone
    ``a b``              both (implicit AND)
    ``a OR b``           either
    ``( ... )``          grouping

    Any other operator (``from:``, ``has:``, ``is:`` ...) is refused as not supported here.
    Rules match the whole recorded tweet, whatever fields a connection asked for.

LIMITS
    Only stream connections are rate-limited, not rules requests. Keywords match runs of
    letters, digits and ``_``, so in text written without spaces (Japanese, Chinese) only a
    whole run matches. A line holding a bare carriage return reaches tweepy as two lines,
    since its line splitting (requests' ``iter_lines``) breaks on ``\\r`` too.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from lambda_demo.contract import due_time
from lambda_demo.errors import XApiError
from lambda_demo.ingestion.clock import SimulatedClock, format_utc
from lambda_demo.ingestion.replay import SAMPLE_FILE, read_lines

logger = logging.getLogger(__name__)

KEEP_ALIVE_SECONDS = 20.0
"""Seconds without data before a keep-alive ``\\r\\n``, as on the real API (tweepy gives up
waiting after 21)."""
CONNECTIONS_PER_WINDOW = 50
WINDOW_SECONDS = 15 * 60
MAX_RULE_LENGTH = 512
"""Longest rule value accepted, as on the X API's lower access tiers."""

RULES_PATH = "/2/tweets/search/stream/rules"
FILTERED_STREAM_PATH = "/2/tweets/search/stream"
SAMPLE_STREAM_PATH = "/2/tweets/sample/stream"

# The values the real API accepts for each field parameter of the stream endpoints.
TWEET_FIELDS = frozenset({
    "article", "attachments", "author_id", "card_uri", "community_id", "context_annotations",
    "conversation_id", "created_at", "display_text_range", "edit_controls",
    "edit_history_tweet_ids", "entities", "geo", "id", "in_reply_to_user_id", "lang",
    "media_metadata", "non_public_metrics", "note_tweet", "organic_metrics", "possibly_sensitive",
    "promoted_metrics", "public_metrics", "referenced_tweets", "reply_settings", "scopes",
    "source", "suggested_source_links", "suggested_source_links_with_counts", "text", "withheld"
})  # fmt: skip
USER_FIELDS = frozenset({
    "affiliation", "confirmed_email", "connection_status", "created_at", "description", "entities",
    "id", "is_identity_verified", "location", "most_recent_tweet_id", "name", "parody",
    "pinned_tweet_id", "profile_banner_url", "profile_image_url", "protected", "public_metrics",
    "receives_your_dm", "subscription", "subscription_type", "url", "username", "verified",
    "verified_followers_count", "verified_type", "withheld"
})  # fmt: skip
EXPANSIONS = frozenset({
    "article.cover_media", "article.media_entities", "attachments.media_keys",
    "attachments.media_source_tweet", "attachments.poll_ids", "author_id",
    "edit_history_tweet_ids", "entities.mentions.username", "geo.place_id", "in_reply_to_user_id",
    "entities.note.mentions.username", "referenced_tweets.id",
    "referenced_tweets.id.attachments.media_keys", "referenced_tweets.id.author_id"
})  # fmt: skip
_FIELD_PARAMETERS = {
    "tweet.fields": TWEET_FIELDS,
    "user.fields": USER_FIELDS,
    "expansions": EXPANSIONS,
}
# What the API always returns, requested or not.
_DEFAULT_TWEET_FIELDS = frozenset({"id", "text", "edit_history_tweet_ids"})
_DEFAULT_USER_FIELDS = frozenset({"id", "name", "username"})

_PROBLEMS = "https://api.twitter.com/2/problems/"
OPERATIONAL_DISCONNECT = json.dumps(
    {
        "errors": [
            {
                "title": "operational-disconnect",
                "disconnect_type": "OperationalDisconnect",
                "detail": "This stream has been disconnected for operational reasons.",
                "type": _PROBLEMS + "operational-disconnect",
            }
        ]
    },
    separators=(",", ":"),
).encode()
"""What the real API sends just before it closes a stream for operational reasons."""

_QUEUE_LINES = 256  # how far the player may run ahead of a client at speedup 0
_FIRST_RULE_ID = 1_900_000_000_000_000_001  # 19 digits like real ids, stable across runs
_WORDS = re.compile(r"\w+")
_RULE_TOKENS = re.compile(r'"[^"]*"?|[()]|[^\s()"]+')
_HASHTAG = re.compile(r"#\w+")
_LANG = re.compile(r"[a-z]{2,3}(?:-[a-z]{2,4})?")


# --- The rule language ----------------------------------------------------------------------------


class RuleError(ValueError):
    """A rule value the language of this server cannot parse; the message says why."""


@dataclass(frozen=True)
class Post:
    """What a rule looks at in a tweet: its words, hashtags and language."""

    words: tuple[str, ...]
    hashtags: frozenset[str]
    lang: str | None

    @classmethod
    def of(cls, data: dict[str, Any]) -> Post:
        """The matchable parts of a tweet's ``data`` object (defensively: it may be garbage)."""
        text = data.get("text")
        entities = data.get("entities")
        tags = entities.get("hashtags") if isinstance(entities, dict) else None
        lang = data.get("lang")
        return cls(
            words=_words(text) if isinstance(text, str) else (),
            hashtags=frozenset(
                tag["tag"].casefold()
                for tag in (tags if isinstance(tags, list) else [])
                if isinstance(tag, dict) and isinstance(tag.get("tag"), str)
            ),
            lang=lang if isinstance(lang, str) else None,
        )


Matcher = Callable[[Post], bool]


@dataclass(frozen=True)
class _Clause:
    """A parsed piece of a rule; ``standalone`` if it can select tweets on its own."""

    matches: Matcher
    standalone: bool


def compile_rule(value: str) -> Matcher:
    """Parse a rule value into a predicate on `Post`; raises `RuleError` saying what is wrong.

    A rule must select tweets by itself: at least one keyword, phrase or hashtag on every
    ``OR`` branch that is not negated (``lang:`` and ``-`` only narrow what it selects), as
    the real API insists.
    """
    if not value.strip():
        raise RuleError("the rule is empty")
    if len(value) > MAX_RULE_LENGTH:
        raise RuleError(f"the rule is {len(value)} characters long; at most {MAX_RULE_LENGTH}")
    parser = _RuleParser(_RULE_TOKENS.findall(value))
    clause = parser.disjunction()
    if parser.position < len(parser.tokens):
        raise RuleError(f"unexpected {parser.tokens[parser.position]!r} (unbalanced parentheses?)")
    if not clause.standalone:
        raise RuleError(
            'Rules must contain a non-negation term: a keyword, a "phrase" or a #hashtag '
            "(lang: and -negation only narrow a rule)"
        )
    return clause.matches


class _RuleParser:
    """Recursive descent over the tokens: disjunction := conjunction (OR conjunction)*."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.position = 0

    def _peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _take(self) -> str:
        token = self._peek()
        if token is None:
            raise RuleError("the rule ends where a term was expected")
        self.position += 1
        return token

    def disjunction(self) -> _Clause:
        branches = [self._conjunction()]
        while self._peek() == "OR":
            self.position += 1
            branches.append(self._conjunction())
        if len(branches) == 1:
            return branches[0]
        return _Clause(
            lambda post: any(branch.matches(post) for branch in branches),
            all(branch.standalone for branch in branches),
        )

    def _conjunction(self) -> _Clause:
        terms = []
        while self._peek() not in (None, ")", "OR"):
            terms.append(self._term(self._take()))
        if not terms:
            raise RuleError(
                {
                    None: "the rule ends where a term was expected",
                    ")": "a ) comes where a term was expected",
                    "OR": "OR needs a term on both sides",
                }[self._peek()]
            )
        if len(terms) == 1:
            return terms[0]
        return _Clause(
            lambda post: all(term.matches(post) for term in terms),
            any(term.standalone for term in terms),
        )

    def _term(self, token: str) -> _Clause:
        if token == "(":
            inner = self.disjunction()
            if self._peek() != ")":
                raise RuleError("a ( is never closed")
            self.position += 1
            return inner
        if token.startswith("-"):
            negated = self._term(token[1:] if len(token) > 1 else self._take())
            return _Clause(lambda post: not negated.matches(post), False)
        return _operand(token)


def _operand(token: str) -> _Clause:
    """One keyword, "phrase", #hashtag or lang: operator."""
    if token == ")":
        raise RuleError("a ) without its (")
    if token.startswith('"'):
        if len(token) < 2 or not token.endswith('"'):
            raise RuleError(f"the phrase {token} has no closing quote")
        return _phrase(token, _words(token[1:-1]))
    if token.startswith("#"):
        if not _HASHTAG.fullmatch(token):
            raise RuleError(f"{token!r} is not a hashtag: # then letters, digits or _")
        tag = token[1:].casefold()
        return _Clause(lambda post: tag in post.hashtags, True)
    name, colon, argument = token.partition(":")
    if colon:
        if name != "lang":
            raise RuleError(
                f"the operator {name}: is not supported by the local server (it knows "
                'keywords, "phrases", #hashtags, lang:, -, OR and parentheses)'
            )
        if not _LANG.fullmatch(argument):
            raise RuleError(f"lang: needs a language code such as en or ja, got {argument!r}")
        return _Clause(lambda post: post.lang == argument, False)
    return _phrase(token, _words(token))


def _phrase(token: str, words: tuple[str, ...]) -> _Clause:
    if not words:
        raise RuleError(f"{token} has no letters or digits to match")
    size = len(words)

    def matches(post: Post) -> bool:
        found = post.words
        return any(found[i : i + size] == words for i in range(len(found) - size + 1))

    return _Clause(matches, True)


def _words(text: str) -> tuple[str, ...]:
    """The tokens a keyword is matched against: runs of letters, digits and _, casefolded."""
    return tuple(_WORDS.findall(text.casefold()))


# --- Shaping a recorded line for one stream request -----------------------------------------------


@dataclass(frozen=True)
class StreamRequest:
    """The fields and expansions one stream connection asked for."""

    tweet_fields: frozenset[str] = frozenset()
    user_fields: frozenset[str] = frozenset()
    expansions: frozenset[str] = frozenset()

    @classmethod
    def from_query(cls, query: dict[str, list[str]]) -> StreamRequest:
        """Read the field parameters; raises `_InvalidRequest` for a value the API lacks."""
        chosen: dict[str, frozenset[str]] = {}
        errors = []
        for name, allowed in _FIELD_PARAMETERS.items():
            values = {v for item in query.get(name, []) for v in item.split(",") if v}
            for value in sorted(values - allowed):
                errors.append(
                    {
                        "parameters": {name: [value]},
                        "message": f"The `{name}` query parameter value [{value}] is not one "
                        f"of [{','.join(sorted(allowed))}]",
                    }
                )
            chosen[name] = frozenset(values)
        if errors:
            raise _InvalidRequest(errors)
        return cls(chosen["tweet.fields"], chosen["user.fields"], chosen["expansions"])

    def shape(self, record: dict[str, Any], matching: list[dict[str, str]] | None) -> bytes:
        """The line this connection receives for a recorded ``{"data": ..., "includes": ...}``.

        Fields not requested are left out, as the real API does; ``matching`` (the filtered
        stream's matching rules) is None on the sample stream.
        """
        data = record["data"]
        expand_author = "author_id" in self.expansions
        keep = (
            _DEFAULT_TWEET_FIELDS | self.tweet_fields | ({"author_id"} if expand_author else set())
        )
        out: dict[str, Any] = {"data": {k: v for k, v in data.items() if k in keep}}
        includes = record.get("includes")
        users = includes.get("users") if isinstance(includes, dict) else None
        if expand_author and isinstance(users, list):
            user_keys = _DEFAULT_USER_FIELDS | self.user_fields
            authors = [
                {k: v for k, v in user.items() if k in user_keys}
                for user in users
                if isinstance(user, dict) and user.get("id") == data.get("author_id")
            ]
            if authors:
                out["includes"] = {"users": authors}
        if matching is not None:
            out["matching_rules"] = matching
        return _encode(out)


def _tweet_object(raw: bytes) -> dict[str, Any] | None:
    """The line as a JSON object with a ``data`` object, or None: then it is sent as it is.

    Decoded as strict UTF-8 and strict JSON, like the contract reads it, so a line the
    contract refuses is never "repaired" by re-encoding on its way to the client.
    """
    try:
        record = json.loads(
            raw.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float
        )
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("data"), dict):
        return None
    return record


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    """1e999 reads as infinity, which JSON cannot write back: such a line is sent as it is."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} overflows a float")
    return value


def _encode(payload: object) -> bytes:
    """Compact UTF-8 JSON; lone surrogates (from ``\\ud800`` escapes) stay escaped."""
    try:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(payload, separators=(",", ":")).encode("ascii")


# --- The server -----------------------------------------------------------------------------------


class _InvalidRequest(Exception):
    """A 400 answer: the real API's ``invalid-request`` problem with these errors."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.body = {
            "errors": errors,
            "title": "Invalid Request",
            "detail": "One or more parameters to your request was invalid.",
            "type": _PROBLEMS + "invalid-request",
        }


@dataclass
class _Rule:
    id: str
    value: str
    tag: str | None
    matches: Matcher

    def as_json(self) -> dict[str, str]:
        out = {"id": self.id, "value": self.value}
        if self.tag is not None:
            out["tag"] = self.tag
        return out

    def match_json(self) -> dict[str, str]:
        return {"id": self.id, "tag": self.tag} if self.tag is not None else {"id": self.id}


class _RateLimit:
    """A fixed window of ``limit`` stream connections, like the real API's 15 minutes."""

    def __init__(self, limit: int, window_seconds: float) -> None:
        self.limit = limit
        self.window = window_seconds
        self._reset = 0.0
        self._used = 0
        self._lock = threading.Lock()

    def take(self) -> tuple[bool, dict[str, str]]:
        """Count one connection; whether it is allowed, and the rate-limit headers."""
        with self._lock:
            now = time.time()
            if now >= self._reset:
                self._reset, self._used = now + self.window, 0
            allowed = self._used < self.limit
            self._used += allowed
            return allowed, {
                "x-rate-limit-limit": str(self.limit),
                "x-rate-limit-remaining": str(self.limit - self._used),
                "x-rate-limit-reset": str(int(self._reset)),
            }


class _End:
    """Queue markers: the files are played (drain, then close), or wake up and look."""


_PLAYED = _End()
_WAKE = _End()


class _Subscriber:
    """One open stream: the player fills a bounded queue, the connection's thread drains it."""

    def __init__(self, request: StreamRequest, *, filtered: bool) -> None:
        self.request = request
        self.filtered = filtered
        self.open = True
        self.farewell: bytes | None = None
        self.closed = threading.Event()
        self._queue: queue.Queue[tuple[int, bytes] | _End] = queue.Queue(_QUEUE_LINES)

    def offer(self, item: tuple[int, bytes] | _End) -> None:
        """Queue for sending, waiting while the client is behind (speedup 0: its pace)."""
        while self.open:
            with contextlib.suppress(queue.Full):
                self._queue.put(item, timeout=0.1)
                return

    def hang_up(self, farewell: bytes | None = None) -> None:
        """Close this stream now, after ``farewell``; queued lines are never sent."""
        self.farewell = farewell
        self.open = False
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_WAKE)

    def take(self, timeout: float) -> tuple[int, bytes] | _End | None:
        """The next thing to send, `_WAKE` if hung up, or None when a keep-alive is due."""
        try:
            item = self._queue.get(timeout=timeout) if self.open else _WAKE
        except queue.Empty:
            return None
        return item if self.open else _WAKE


class XapiServer:
    """A running server (HTTP in one thread, the player in another); see the module doc."""

    def __init__(
        self,
        files: Sequence[Path],
        *,
        speedup: float,
        port: int,
        once: bool,
        keep_alive: float,
        connections_per_window: int,
        window_seconds: float,
    ) -> None:
        self.files = list(files)
        self.speedup = speedup
        self.once = once
        self.keep_alive = keep_alive
        self.played = 0
        """Lines played so far (sent to the clients connected at the time, or gone)."""
        self.connections = 0
        """Stream connections accepted so far."""
        self._sent: list[int | None] = []
        self._rules: dict[str, _Rule] = {}
        self._rule_ids = itertools.count(_FIRST_RULE_ID)
        self._subscribers: set[_Subscriber] = set()
        self._lock = threading.Lock()
        self._limits = {
            path: _RateLimit(connections_per_window, window_seconds)
            for path in (FILTERED_STREAM_PATH, SAMPLE_STREAM_PATH)
        }
        self._player: threading.Thread | None = None
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._clock = SimulatedClock(speedup=speedup, sleep=self._stopping.wait)
        try:
            self._httpd = _HttpServer(("127.0.0.1", port), _Handler, self)
        except OSError as exc:
            raise XApiError(
                f"Cannot listen on 127.0.0.1:{port} ({exc.strerror}): choose another --port, "
                "or 0 for any free port."
            ) from exc
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        """The base URL to set as ``LAMBDA_DEMO_X_API_URL``."""
        self._serving = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},  # how long `stop` waits for the accept loop
            name="xapi-http",
            daemon=True,
        )
        self._serving.start()

    @property
    def sent(self) -> list[int | None]:
        """File line numbers written to clients, in order (0-based over all files, like
        replay's ``replay-line``); None for the server's own operational-disconnect message."""
        return list(self._sent)

    @property
    def rules(self) -> list[dict[str, str]]:
        """The filtered stream's rules, as the rules endpoint lists them."""
        with self._lock:
            return [rule.as_json() for rule in self._rules.values()]

    def disconnect(self) -> int:
        """Send every connected client the operational-disconnect message and close its stream.

        Returns how many streams were closed. tweepy reconnects at once; what is played
        meanwhile is gone, as on the real API.
        """
        with self._lock:
            subscribers = list(self._subscribers)
            self._subscribers.clear()
        for subscriber in subscribers:
            subscriber.hang_up(OPERATIONAL_DISCONNECT)
        logger.info("operational disconnect of %d stream(s)", len(subscribers))
        return len(subscribers)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the server is done; True if it is.

        With ``once`` that is when the files are played and the streams closed; without it,
        only `stop` ends a server.
        """
        return self._done.wait(timeout)

    def stop(self) -> None:
        """Close every stream (clients see the end of the response), then stop serving."""
        self._stopping.set()
        with self._lock:
            subscribers = list(self._subscribers)
            self._subscribers.clear()
        for subscriber in subscribers:
            subscriber.hang_up()
        for subscriber in subscribers:
            subscriber.closed.wait(5)
        self._httpd.shutdown()
        self._httpd.server_close()
        self._done.set()

    def __enter__(self) -> XapiServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- called by the HTTP handler threads --

    def _subscribe(self, request: StreamRequest, *, filtered: bool) -> _Subscriber:
        subscriber = _Subscriber(request, filtered=filtered)
        with self._lock:
            self._subscribers.add(subscriber)
            self.connections += 1
            if self._player is None:  # the clock starts with the first client
                self._player = threading.Thread(target=self._play, name="xapi-player", daemon=True)
                self._player.start()
        return subscriber

    def _unsubscribe(self, subscriber: _Subscriber) -> None:
        subscriber.open = False
        with self._lock:
            self._subscribers.discard(subscriber)
        subscriber.closed.set()

    def _record_sent(self, line: int | None) -> None:
        self._sent.append(line)

    def _change_rules(self, body: object, *, dry_run: bool) -> dict[str, Any]:
        """The rules endpoint's POST: add or delete; raises `_InvalidRequest` if malformed."""
        if not isinstance(body, dict) or len(body.keys() & {"add", "delete"}) != 1:
            raise _InvalidRequest([{"message": "The body must have either add or delete"}])
        with self._lock:
            if "add" in body:
                return self._add_rules(body["add"], dry_run=dry_run)
            return self._delete_rules(body["delete"], dry_run=dry_run)

    def _add_rules(self, add: object, *, dry_run: bool) -> dict[str, Any]:
        if not isinstance(add, list) or not all(
            isinstance(item, dict)
            and isinstance(item.get("value"), str)
            and isinstance(item.get("tag", ""), str)
            for item in add
        ):
            raise _InvalidRequest([{"message": "add must be a list of {value, tag} objects"}])
        errors: list[dict[str, Any]] = []
        new: list[_Rule] = []
        present = {rule.value: rule.id for rule in self._rules.values()}
        for item in add:
            value, tag = item["value"], item.get("tag")
            try:
                matches = compile_rule(value)
            except RuleError as exc:
                errors.append(
                    {
                        "value": value,
                        "details": [str(exc)],
                        "title": "UnprocessableEntity",
                        "type": _PROBLEMS + "invalid-rules",
                    }
                )
                continue
            if value in present:
                errors.append(
                    {
                        "value": value,
                        "id": present[value],
                        "title": "DuplicateRule",
                        "type": _PROBLEMS + "duplicate-rules",
                    }
                )
                continue
            rule = _Rule(str(next(self._rule_ids)), value, tag, matches)
            present[value] = rule.id
            new.append(rule)
        if any(error["title"] == "UnprocessableEntity" for error in errors):
            new = []  # one invalid rule and the real API creates none of the request
        if not dry_run:
            self._rules.update((rule.id, rule) for rule in new)
        answer: dict[str, Any] = {}
        if new:
            answer["data"] = [rule.as_json() for rule in new]
        answer["meta"] = {
            "sent": format_utc(datetime.now(UTC)),
            "summary": {
                "created": len(new),
                "not_created": len(add) - len(new),
                "valid": len(add) - len(errors),
                "invalid": len(errors),
            },
        }
        if errors:
            answer["errors"] = errors
        return answer

    def _delete_rules(self, delete: object, *, dry_run: bool) -> dict[str, Any]:
        ids = delete.get("ids") if isinstance(delete, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise _InvalidRequest([{"message": "delete.ids must be a list of rule id strings"}])
        found = [i for i in dict.fromkeys(ids) if i in self._rules]
        missing = [i for i in ids if i not in self._rules]
        if not dry_run:
            for rule_id in found:
                del self._rules[rule_id]
        answer: dict[str, Any] = {
            "meta": {
                "sent": format_utc(datetime.now(UTC)),
                "summary": {"deleted": len(found), "not_deleted": len(missing)},
            }
        }
        if missing:
            answer["errors"] = [
                {
                    "value": rule_id,
                    "title": "Not Found Error",
                    "detail": f"There is no rule with id {rule_id}",
                    "type": _PROBLEMS + "resource-not-found",
                }
                for rule_id in missing
            ]
        return answer

    def _list_rules(self, ids: set[str]) -> dict[str, Any]:
        with self._lock:
            rules = [r.as_json() for r in self._rules.values() if not ids or r.id in ids]
        answer: dict[str, Any] = {"data": rules} if rules else {}
        answer["meta"] = {"sent": format_utc(datetime.now(UTC)), "result_count": len(rules)}
        return answer

    # -- the player thread --

    def _play(self) -> None:
        """Play every line on the simulated clock to the clients connected at that moment."""
        for number, raw in enumerate(self._lines()):
            self._clock.tick(due_time(raw))
            if self._stopping.is_set():
                return
            record = _tweet_object(raw)
            with self._lock:
                subscribers = list(self._subscribers)
                rules = list(self._rules.values())
            matching = None
            if record is not None and any(s.filtered for s in subscribers):
                post = Post.of(record["data"])
                matching = [rule.match_json() for rule in rules if rule.matches(post)]
            shaped: dict[tuple[StreamRequest, bool], bytes] = {}
            for subscriber in subscribers:
                if record is None:
                    subscriber.offer((number, raw))
                elif not subscriber.filtered or matching:
                    key = (subscriber.request, subscriber.filtered)
                    if key not in shaped:
                        rules_json = matching if subscriber.filtered else None
                        shaped[key] = subscriber.request.shape(record, rules_json)
                    subscriber.offer((number, shaped[key]))
            self.played += 1
        logger.info("played %d lines", self.played)
        if self.once:
            self._close_streams_when_drained()

    def _lines(self) -> Iterator[bytes]:
        for path in self.files:
            yield from read_lines(path)

    def _close_streams_when_drained(self) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            subscriber.offer(_PLAYED)
        for subscriber in subscribers:
            subscriber.closed.wait()
        self._done.set()


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, xapi: XapiServer) -> None:
        self.xapi = xapi
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    """One HTTP connection: auth, then the rules endpoint or a stream."""

    protocol_version = "HTTP/1.1"
    server_version = "lambda-demo-xapi"
    timeout = 60  # a client that reads nothing for a minute is dropped
    server: _HttpServer

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if not self._authorized():
            return
        if url.path == RULES_PATH:
            ids = {i for item in query.get("ids", []) for i in item.split(",") if i}
            self._send_json(200, self.server.xapi._list_rules(ids))
        elif url.path in (FILTERED_STREAM_PATH, SAMPLE_STREAM_PATH):
            self._stream(url.path, query)
        else:
            self._not_found(url.path)

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)  # read first: an unread body would break keep-alive
        if not self._authorized():
            return
        if url.path != RULES_PATH:
            self._not_found(url.path)
            return
        dry_run = parse_qs(url.query).get("dry_run", ["false"])[-1].lower() == "true"
        try:
            try:
                parsed = json.loads(body)
            except ValueError:
                raise _InvalidRequest([{"message": "The body is not valid JSON"}]) from None
            self._send_json(200, self.server.xapi._change_rules(parsed, dry_run=dry_run))
        except _InvalidRequest as exc:
            self._send_json(400, exc.body)

    def _authorized(self) -> bool:
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return True
        body = {"title": "Unauthorized", "type": "about:blank", "status": 401}
        self._send_json(401, {**body, "detail": "Unauthorized"})
        return False

    def _not_found(self, path: str) -> None:
        detail = f"The local X API server has no {path} (it serves the stream endpoints only)"
        problem = {"title": "Not Found Error", "type": _PROBLEMS + "resource-not-found"}
        self._send_json(404, {**problem, "detail": detail})

    def _send_json(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, path: str, query: dict[str, list[str]]) -> None:
        xapi = self.server.xapi
        try:
            request = StreamRequest.from_query(query)
        except _InvalidRequest as exc:
            self._send_json(400, exc.body)
            return
        allowed, limits = xapi._limits[path].take()
        if not allowed:
            logger.info("429 to a client connecting too often to %s", path)
            problem = {"title": "Too Many Requests", "type": "about:blank", "status": 429}
            self._send_json(429, {**problem, "detail": "Too Many Requests"}, limits)
            return
        subscriber = xapi._subscribe(request, filtered=path == FILTERED_STREAM_PATH)
        logger.info("stream %d connected to %s", xapi.connections, path)
        self.close_connection = True
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            for name, value in limits.items():
                self.send_header(name, value)
            self.end_headers()
            self._pump(subscriber)
            self.wfile.write(b"0\r\n\r\n")  # the end of the chunked response: a clean close
        except OSError as exc:  # the client went away (reset, broken pipe, timeout)
            logger.info("stream client gone: %s", exc)
        finally:
            xapi._unsubscribe(subscriber)

    def _pump(self, subscriber: _Subscriber) -> None:
        xapi = self.server.xapi
        while True:
            item = subscriber.take(xapi.keep_alive)
            if item is None:
                self._chunk(b"\r\n")
            elif item is _WAKE:
                if subscriber.farewell is not None:
                    self._chunk(subscriber.farewell + b"\r\n")
                    xapi._record_sent(None)
                return
            elif item is _PLAYED:
                return
            else:
                line, payload = item
                self._chunk(payload + b"\r\n")
                xapi._record_sent(line)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)


def serve(
    files: Sequence[Path] | None = None,
    *,
    speedup: float = 0.0,
    port: int = 0,
    once: bool = False,
    keep_alive: float = KEEP_ALIVE_SECONDS,
    connections_per_window: int = CONNECTIONS_PER_WINDOW,
    window_seconds: float = WINDOW_SECONDS,
) -> XapiServer:
    """Start a server on 127.0.0.1 (``port=0``: any free port) in background threads.

    Returns at once; the playback starts when the first client connects. Use the result
    as a context manager, or call `XapiServer.stop`, to shut it down.
    """
    return XapiServer(
        files or [SAMPLE_FILE],
        speedup=speedup,
        port=port,
        once=once,
        keep_alive=keep_alive,
        connections_per_window=connections_per_window,
        window_seconds=window_seconds,
    )
