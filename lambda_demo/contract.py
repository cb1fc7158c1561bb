"""The ingestion contract: which raw tweets count, and the flat record every layer agrees on.

The live producer, the replay tool, the speed layer and the batch layer must agree on what a
valid tweet is and on how a tweet's location becomes a grouping key; if they did not, the
batch and speed views would disagree for reasons that have nothing to do with the Lambda
Architecture. So the rules live here, as pure functions without I/O, and every layer imports
them: which records are valid, and (at the end of this module) which delivery of a tweet
counts, on which day, and which layer serves that day. Nothing in this module raises on bad
input: garbage becomes a `Rejected` value with a machine-readable reason, so a dead-letter
queue can count reasons and a learner can read why.
"""

from __future__ import annotations

import json
import re
import reprlib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import orjson
import tweepy

from lambda_demo.ingestion.clock import format_utc, from_millis, to_millis

UNKNOWN_LOCATION = "(unknown)"
"""The location key for authors whose location is missing, null, not a string or blank."""

FLAT_VERSION = 1
"""Value of the ``v`` key of every flat record; bump it when the flat layout changes."""

MAX_BIGINT = 2**63 - 1
"""Largest tweet id accepted, so every id fits a signed 64-bit SQL column."""

MAX_COUNT = 2**31 - 1
"""Largest followers, like or retweet count accepted.

Every measure of the view is a sum of counts in a signed 64-bit column (SQL ``BIGINT``,
Spark ``long``, pandas ``int64``). With each count below 2**31, a location's sum stays below
2**63 up to 2**32 tweets: ``(2**31 - 1) * 2**32 < 2**63``, so no stream the contract accepts
can overflow a sum in any layer. Real counts are far smaller (the most-followed account has
about 2**28 followers), so the bound refuses only forged records.
"""

FIRST_TWEET = datetime(2006, 3, 21, tzinfo=UTC)
"""The day of the first tweet: no tweet was ingested before it."""

LAST_INGEST = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
"""The last instant Python, pandas' epoch arithmetic, Spark and SQL dates all represent."""

_MAX_ID_DIGITS = len(str(MAX_BIGINT))  # 19: checked before int() so a 1 MB id stays cheap
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() would accept "١٢٣" and "²"
# The X API writes "2026-11-01T20:15:00.000Z"; accept that grammar with an optional 1-9 digit
# fraction and "Z" or "+00:00". Anything else (other offsets, a space for "T", no seconds) is
# refused rather than guessed at: a wrong timestamp silently lands in the wrong window.
_TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(?:Z|\+00:00)"
)
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")  # see _fast_object
_FAST_MAX_BRACKETS = 200  # far below any recursion limit; a tweet has a few dozen
# Best-effort scan for due_time() when a line is not JSON at all (e.g. truncated).
_CREATED_AT_FIELD = re.compile(r'"created_at"\s*:\s*"([^"\\]{1,64})"')
# JSON may carry "\ud800" escapes that decode to lone surrogates, which UTF-8 cannot encode.
_SURROGATE = re.compile("[\ud800-\udfff]")
_SHOW = reprlib.Repr()
_SHOW.maxstring = 40
_SHOW.maxother = 40


class InvalidRecord(ValueError):
    """A record broke the contract; ``reason`` is machine-readable, ``detail`` is for humans."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Rejected:
    """Why a record was refused; a value rather than an exception so callers can count it."""

    reason: str
    detail: str


@dataclass(frozen=True)
class FlatTweet:
    """The versioned flat record written to the ``tweets`` topic and read by both layers.

    Flat, because Spark and SQL read flat columns far more easily than the API's nested
    ``data``/``includes`` envelope; versioned (``v``), so a layout change is detectable.
    ``hashtags`` is a tuple so the record stays hashable; it is serialised as a JSON list.
    """

    tweet_id: str
    created_at: str
    author_id: str
    location: str
    followers_count: int
    like_count: int
    retweet_count: int
    hashtags: tuple[str, ...]
    lang: str | None
    text: str

    def to_json_bytes(self) -> bytes:
        """Compact UTF-8 JSON with the keys in a fixed order, so equal records are equal bytes."""
        record = {
            "v": FLAT_VERSION,
            "tweet_id": self.tweet_id,
            "created_at": self.created_at,
            "author_id": self.author_id,
            "location": self.location,
            "followers_count": self.followers_count,
            "like_count": self.like_count,
            "retweet_count": self.retweet_count,
            "hashtags": list(self.hashtags),
            "lang": self.lang,
            "text": self.text,
        }
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json_bytes(cls, raw: bytes) -> FlatTweet:
        """Read a flat record under the rules of `parse_flat`; raises `InvalidRecord`."""
        return _flat_from_record(_fast_object(raw) or _load_object(_decode(raw)))


def location_key(raw: object) -> str:
    """The grouping key for an author's free-text location.

    Surrounding whitespace is stripped (``str.strip()``) so "London" and " London " count
    together; missing, null, non-string and blank locations all become `UNKNOWN_LOCATION`, so
    the unknown bucket is one row rather than several. Lone surrogates become U+FFFD so the
    key can always be written as UTF-8. Nothing else is normalised: case, emoji, ``;``, quotes
    and inner newlines are kept, because they are what the users wrote.
    """
    if not isinstance(raw, str):
        return UNKNOWN_LOCATION
    return _scrub(raw.strip()) or UNKNOWN_LOCATION


def parse_api_tweet(raw: bytes | str) -> FlatTweet | Rejected | None:
    """Turn one line of the X API v2 filtered stream into a `FlatTweet`, or say why not.

    Returns None for a blank line (only whitespace): streams send keep-alive newlines. Never
    raises. Checks run in this order, and the first failure is the reason:

    - ``not_utf8``: the bytes are not UTF-8.
    - ``not_json``: not strict JSON (also: nesting too deep, integers over 4300 digits,
      ``NaN``/``Infinity``).
    - ``not_object``: the JSON is not an object.
    - ``missing_data``: no object under ``data``.
    - ``bad_id``: ``data.id`` is not a non-empty string of ASCII digits.
    - ``id_out_of_range``: ``data.id`` has more than 19 digits or exceeds 2**63-1.
    - ``bad_created_at``: ``data.created_at`` is not ``YYYY-MM-DDTHH:MM:SS[.f{1,9}]`` followed
      by ``Z`` or ``+00:00``, or is not a real date (years 1..9999).
    - ``bad_author_id``: ``data.author_id`` is not a non-empty string of ASCII digits.
    - ``author_not_in_includes``: no object in ``includes.users`` has that ``id``.
    - ``bad_retweet_count`` / ``bad_like_count``: ``data.public_metrics.retweet_count`` /
      ``.like_count`` is not a JSON integer (bool and float refused) in [0, 2**31).
    - ``bad_followers_count``: the author's ``public_metrics.followers_count``, likewise.
    - ``bad_text``: ``data.text`` is not a string.
    - ``model_rejected``: tweepy's own ``Tweet``/``User`` models refuse the record (for
      example a user without ``username``); the live path would fail on it too.

    The record is then read through ``tweepy.Tweet`` and ``tweepy.User``, the models the live
    stream client builds, so a replay exercises the same parsing as the live path.
    """
    try:
        obj = _fast_object(raw)
        if obj is None:
            text = _decode(raw)
            if not text.strip():
                return None
            obj = _load_object(text)
        return _flat_from_api(obj)
    except InvalidRecord as exc:
        return Rejected(exc.reason, exc.detail)


def parse_flat(raw: bytes | None) -> FlatTweet | Rejected:
    """Validate a flat record read back from Kafka, where foreign producers may write garbage.

    Never raises. The lead re-implements these rules in Spark SQL, so they are exactly:

    - ``null_value``: the value is None (a Kafka tombstone).
    - ``not_utf8``: the bytes are not UTF-8.
    - ``not_json``: not strict JSON (as in `parse_api_tweet`).
    - ``not_object``: the JSON is not an object.
    - ``bad_version``: ``v`` is not the JSON integer 1 (``true`` and ``1.0`` refused).
    - ``bad_id``: ``tweet_id`` is not a non-empty string of ASCII digits.
    - ``id_out_of_range``: ``tweet_id`` has more than 19 digits or exceeds 2**63-1.
    - ``bad_created_at``: ``created_at`` is not a string.
    - ``bad_location``: ``location`` is not a string.
    - ``bad_followers_count``, ``bad_like_count``, ``bad_retweet_count``: the field is not a
      JSON integer (bool and float refused) in [0, 2**31): see `MAX_COUNT`.
    - ``nul_character``: ``location``, ``author_id``, ``created_at`` or ``lang`` holds U+0000.

    Other keys are optional and never make a record invalid: ``author_id`` and ``text``
    default to "" and ``lang`` to None when not strings; ``hashtags`` keeps its string items
    when it is a list and is empty otherwise. Lone surrogates in strings become U+FFFD.
    """
    if raw is None:
        return Rejected("null_value", "the Kafka record has no value (a tombstone)")
    try:
        return FlatTweet.from_json_bytes(raw)
    except InvalidRecord as exc:
        return Rejected(exc.reason, exc.detail)


MIN_INGEST_MS = to_millis(FIRST_TWEET)
MAX_INGEST_MS = to_millis(LAST_INGEST)


def ingest_time(ingest_ms: int) -> datetime | None:
    """A Kafka timestamp as an aware UTC datetime; None if no tweet can have it.

    Kafka accepts any 64-bit timestamp, but a tweet was ingested after `FIRST_TWEET`, and
    past `LAST_INGEST` no engine of the pipeline can even write the date down.
    """
    if not MIN_INGEST_MS <= ingest_ms <= MAX_INGEST_MS:
        return None
    return from_millis(ingest_ms)


def ingest_time_rejection(ingest_ms: int) -> Rejected | None:
    """Why a record with this Kafka timestamp is refused (``bad_ingest_time``), or None."""
    if ingest_time(ingest_ms) is not None:
        return None
    return Rejected(
        "bad_ingest_time",
        f"Kafka timestamp {ingest_ms} ms is outside "
        f"{FIRST_TWEET.date().isoformat()}..{LAST_INGEST.date().isoformat()}",
    )


def parse_record(value: bytes | None, ingest_ms: int) -> FlatTweet | Rejected:
    """A record of the ``tweets`` topic under the contract: its timestamp, then its value.

    Every layer (the speed layer, the batch loader, ``check``) judges a Kafka record with this
    one function, so a record is counted by all of them or quarantined by all of them, with
    the same reason. The timestamp is checked first:

    - ``bad_ingest_time``: the Kafka timestamp is before `FIRST_TWEET` or after
      `LAST_INGEST` (a foreign producer's clock, or a deliberate poison pill).

    then the value, with `parse_flat`'s reasons.
    """
    return ingest_time_rejection(ingest_ms) or parse_flat(value)


# Which delivery counts, on which day, and which layer serves that day. Each rule is written
# once here; every layer renders it (SQL text, pandas sort keys, Spark's session time zone)
# from these definitions rather than restating it.

FIRST_DELIVERY_ORDER: tuple[str, ...] = ("ingest_time", "partition", "offset")
"""First delivery wins: of a tweet id's deliveries, the one that sorts first by these wins.

A tweet delivered twice counts once, at its *first* delivery: the smallest Kafka ingest
time, then the smallest partition, then the smallest offset (ascending, lexicographically).
Its location, counts and ingest day are that delivery's. The batch recompute (SQL over
``raw_tweets``) and ``check`` (pandas over the topic) both sort by
`DeliveryColumns.first_delivery_order`, their own column names in this order.

**The speed layer's one difference.** Spark's ``dropDuplicatesWithinWatermark`` keeps the
delivery it *processes* first, and remembers a tweet id only until its watermark passes
that delivery's ingest time plus ``speed.stream.WATERMARK``. The handler keys records by
tweet id, so every delivery of a tweet lands in one partition, which Spark reads in offset
order, and the handler's ingest clock does not run backwards: the first processed is the
first delivery. A foreign producer (another partition, or an earlier timestamp at a later
offset) or a duplicate more than ``WATERMARK`` after the first can make the speed view count
a tweet at another delivery, or twice; the next batch run whose cutoff passes those days
counts it once, in this order.
"""


@dataclass(frozen=True)
class DeliveryColumns:
    """Where one layer keeps a delivery's Kafka coordinates, named by meaning."""

    ingest_time: str
    partition: str
    offset: str

    def first_delivery_order(self) -> list[str]:
        """The columns to sort by, ascending, so each tweet's first delivery comes first."""
        return [getattr(self, meaning) for meaning in FIRST_DELIVERY_ORDER]

    def sql_order_by(self) -> str:
        """`first_delivery_order` as the list of an SQL ``ORDER BY``."""
        return ", ".join(self.first_delivery_order())


INGEST_DAY_ZONE = UTC
"""A record's day is the UTC day of its Kafka ingest timestamp.

Not ``created_at`` (the author's clock, and any producer's word), not the wall clock: the
ingest time is the one timestamp every layer reads from the same Kafka record. Python
layers (archiver, loader, the pipeline clock) call `ingest_day`; Spark's SQL session time
zone is this zone (``lambda_demo.clients.spark``), so its ``to_date`` and day windows agree.
"""


def ingest_day_of(moment: datetime) -> date:
    """The day an aware instant falls on, under `INGEST_DAY_ZONE`."""
    return moment.astimezone(INGEST_DAY_ZONE).date()


def ingest_day(ingest_ms: int) -> date:
    """A record's day: the UTC day of its Kafka ingest timestamp (epoch milliseconds)."""
    return ingest_day_of(from_millis(ingest_ms))


def served_by_batch(day: date, cutoff: date | None) -> bool:
    """The split at the cutoff D: the batch view serves ingest days before D, the speed view
    serves D and every later day (and every day before the first batch run, ``None``).

    Each day is served by exactly one layer, so no tweet is counted on both sides.
    """
    return cutoff is not None and day < cutoff


def sql_batch_days(day: str, cutoff: str) -> str:
    """`served_by_batch` as an SQL condition on two SQL expressions (a NULL cutoff: false)."""
    return f"{day} < {cutoff}"


def sql_speed_days(day: str, cutoff: str) -> str:
    """The complement of `sql_batch_days`, also for a NULL cutoff (no batch run yet)."""
    return f"({sql_batch_days(day, cutoff)}) IS NOT TRUE"


def due_time(raw: bytes | str, parsed: FlatTweet | Rejected | None = None) -> datetime | None:
    """The line's ``created_at`` as an aware UTC datetime, or None if it cannot be read.

    Best effort, for the replay clock: it also reads invalid records (a bad count, a truncated
    line, a non-UTC offset), so garbage is replayed at the moment it belongs to rather than
    bunched at the start. Pass the line's ``parse_api_tweet`` result to skip a second JSON
    parse of a valid line.
    """
    if isinstance(parsed, FlatTweet):
        return _parse_utc(parsed.created_at)
    text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("data"), dict):
        value = obj["data"].get("created_at")
    else:
        match = _CREATED_AT_FIELD.search(text)
        value = match.group(1) if match else None
    if not isinstance(value, str):
        return None
    return _parse_utc(value) or _parse_any_offset(value)


def _flat_from_api(obj: dict[str, Any]) -> FlatTweet:
    data = obj.get("data")
    if not isinstance(data, dict):
        raise InvalidRecord("missing_data", f"no object under 'data' (got {_show(data)})")
    tweet_id = _check_id(data.get("id"), path="data.id")
    created_at = _parse_utc(data.get("created_at"))
    if created_at is None:
        got = _show(data.get("created_at"))
        raise InvalidRecord("bad_created_at", f"data.created_at must be ISO-8601 UTC, got {got}")
    author_id = data.get("author_id")
    if not isinstance(author_id, str) or _DIGITS.fullmatch(author_id) is None:
        raise InvalidRecord(
            "bad_author_id", f"data.author_id must be a digit string, got {_show(author_id)}"
        )
    user_data = _find_author(obj.get("includes"), author_id)
    metrics = data.get("public_metrics")
    _check_count(metrics, "retweet_count", reason="bad_retweet_count", path="data.public_metrics")
    _check_count(metrics, "like_count", reason="bad_like_count", path="data.public_metrics")
    _check_count(
        user_data.get("public_metrics"),
        "followers_count",
        reason="bad_followers_count",
        path="includes.users[author].public_metrics",
    )
    if not isinstance(data.get("text"), str):
        raise InvalidRecord(
            "bad_text", f"data.text must be a string, got {_show(data.get('text'))}"
        )

    stamp = format_utc(created_at)
    tweet, user = _models(data, user_data)
    entities = tweet.entities if isinstance(tweet.entities, dict) else {}
    hashtags = entities.get("hashtags")
    return _refuse_nul(
        FlatTweet(
            tweet_id=tweet_id,  # the original digits: tweepy's int would drop leading zeros
            created_at=stamp,
            author_id=author_id,
            location=location_key(user.location),
            followers_count=user.public_metrics["followers_count"],
            like_count=tweet.public_metrics["like_count"],
            retweet_count=tweet.public_metrics["retweet_count"],
            hashtags=tuple(
                _scrub(tag["tag"])
                for tag in (hashtags if isinstance(hashtags, list) else [])
                if isinstance(tag, dict) and isinstance(tag.get("tag"), str)
            ),
            lang=_scrub(tweet.lang) if isinstance(tweet.lang, str) else None,
            text=_scrub(tweet.text),
        )
    )


def _models(data: dict[str, Any], user_data: dict[str, Any]) -> tuple[tweepy.Tweet, tweepy.User]:
    """Build tweepy's models from validated dicts; whatever they refuse becomes a rejection.

    The tweet's ``created_at`` is already read (`_parse_utc`), so tweepy is not handed it: its
    parser (``strptime``, a third of the models' cost) insists on fractional seconds, and of
    the normalised form ``format_utc`` writes it reads back the same instant for every year
    1..9999 (``tests/unit/test_contract_fast_json.py``), so it could neither refuse the
    record nor change it. A missing ``edit_history_tweet_ids`` (always sent by the API)
    would make tweepy emit a warning per record, so it defaults to the tweet's own id.
    """
    tweet_data = {"edit_history_tweet_ids": [data["id"]], **data}
    del tweet_data["created_at"]
    try:
        return tweepy.Tweet(tweet_data), tweepy.User(user_data)
    except Exception as exc:  # third-party code on hostile input: any failure is a rejection
        detail = f"tweepy could not model the record: {type(exc).__name__}: {str(exc)[:120]}"
        raise InvalidRecord("model_rejected", detail) from exc


def _flat_from_record(obj: dict[str, Any]) -> FlatTweet:
    version = obj.get("v")
    if type(version) is not int or version != FLAT_VERSION:
        raise InvalidRecord("bad_version", f"v must be {FLAT_VERSION}, got {_show(version)}")
    tweet_id = _check_id(obj.get("tweet_id"), path="tweet_id")
    created_at = obj.get("created_at")
    if not isinstance(created_at, str):
        raise InvalidRecord(
            "bad_created_at", f"created_at must be a string, got {_show(created_at)}"
        )
    location = obj.get("location")
    if not isinstance(location, str):
        raise InvalidRecord("bad_location", f"location must be a string, got {_show(location)}")
    followers = _check_count(obj, "followers_count", reason="bad_followers_count", path="")
    likes = _check_count(obj, "like_count", reason="bad_like_count", path="")
    retweets = _check_count(obj, "retweet_count", reason="bad_retweet_count", path="")
    author_id, hashtags, lang, text = (
        obj.get(k) for k in ("author_id", "hashtags", "lang", "text")
    )
    return _refuse_nul(
        FlatTweet(
            tweet_id=tweet_id,
            created_at=_scrub(created_at),
            author_id=_scrub(author_id) if isinstance(author_id, str) else "",
            location=_scrub(location),
            followers_count=followers,
            like_count=likes,
            retweet_count=retweets,
            hashtags=tuple(
                _scrub(tag)
                for tag in (hashtags if isinstance(hashtags, list) else [])
                if isinstance(tag, str)
            ),
            lang=_scrub(lang) if isinstance(lang, str) else None,
            text=_scrub(text) if isinstance(text, str) else "",
        )
    )


def _refuse_nul(flat: FlatTweet) -> FlatTweet:
    """Reject a NUL character in the fields the warehouse stores: SQL text cannot hold one.

    An extension of the contract (reason ``nul_character``): PostgreSQL and Redshift refuse
    U+0000 in TEXT, so such a record could never reach the batch view; refusing it at the
    door keeps every layer in agreement. ``text`` may keep it: no layer stores the text.
    """
    for name in ("location", "author_id", "created_at", "lang"):
        value = getattr(flat, name)
        if value is not None and "\x00" in value:
            raise InvalidRecord("nul_character", f"{name} contains a NUL character (U+0000)")
    return flat


def _decode(raw: bytes | str) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRecord("not_utf8", f"invalid UTF-8 at byte {exc.start}: {exc.reason}") from exc


def _fast_object(raw: bytes | str) -> dict[str, Any] | None:
    """The JSON object in ``raw`` read by orjson, when that is certainly what `_load_object`
    would read (a few times faster); None when it is not, or for anything but an object.

    orjson refuses all that ``json`` refuses here (invalid UTF-8, NaN, ``1e400``, nesting
    deeper than 1024) and more (lone surrogate escapes): those fall through to the one
    reading that decides, ``json``'s. It reads two things differently, so such lines are
    left to ``json`` too: an integer beyond 64 bits (a float, not an int), found as a run of
    20 digits or of 19 after a minus; and nesting between Python's recursion limit and 1024
    (valid for orjson), found as more than `_FAST_MAX_BRACKETS` opening brackets.
    """
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    if data.count(b"[") + data.count(b"{") > _FAST_MAX_BRACKETS:
        return None
    digits = data.translate(_DIGITS_AS_ZERO)  # a run of digits becomes a run of b"0"
    if b"00000000000000000000" in digits or b"-0000000000000000000" in digits:
        return None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _load_object(text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # RecursionError: '[' * 100000
        raise InvalidRecord("not_json", f"{type(exc).__name__}: {str(exc)[:120]}") from exc
    if not isinstance(obj, dict):
        raise InvalidRecord("not_object", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _refuse_constant(name: str) -> object:
    """NaN and Infinity are Python extensions, not JSON; Spark and PostgreSQL refuse them."""
    raise ValueError(f"{name} is not JSON")


def _check_id(value: object, *, path: str) -> str:
    if not isinstance(value, str) or _DIGITS.fullmatch(value) is None:
        raise InvalidRecord(
            "bad_id", f"{path} must be a non-empty digit string, got {_show(value)}"
        )
    if len(value) > _MAX_ID_DIGITS or int(value) > MAX_BIGINT:
        raise InvalidRecord("id_out_of_range", f"{path} {_show(value)} does not fit a BIGINT")
    return value


def _check_count(container: object, key: str, *, reason: str, path: str) -> int:
    """A JSON integer in [0, 2**31); ``type() is int`` because bool is an int subclass."""
    value = container.get(key) if isinstance(container, dict) else None
    if type(value) is not int or not 0 <= value <= MAX_COUNT:
        where = f"{path}.{key}" if path else key
        raise InvalidRecord(reason, f"{where} must be an integer in [0, 2**31), got {_show(value)}")
    return value


def _find_author(includes: object, author_id: str) -> dict[str, Any]:
    users = includes.get("users") if isinstance(includes, dict) else None
    for user in users if isinstance(users, list) else []:
        if isinstance(user, dict) and user.get("id") == author_id:
            return user
    raise InvalidRecord("author_not_in_includes", f"no user with id {author_id} in includes.users")


def _parse_utc(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    match = _TIMESTAMP.fullmatch(value)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction = match.groups()
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int((fraction or "0")[:6].ljust(6, "0")),
            tzinfo=UTC,
        )
    except ValueError:  # month 13, February 30, second 60, year 0
        return None


def _parse_any_offset(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
        return parsed.astimezone(UTC) if parsed.tzinfo is not None else None
    except (ValueError, OverflowError):  # OverflowError: "0001-01-01T00:00:00+05:00"
        return None


def _scrub(value: str) -> str:
    return _SURROGATE.sub("\ufffd", value)


def _show(value: object) -> str:
    """A short description of a value for a rejection detail, safe for a 1 MB string."""
    return _SHOW.repr(value)
