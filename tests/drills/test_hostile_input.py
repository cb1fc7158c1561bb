"""Hostile input through every door: a foreign producer and the replay handler.

Each hostile record must end up with a clear reason (``reason`` header on ``tweets.dlq`` for
the replay path; ``quarantine`` rows of layer ``batch`` and ``speed`` for records a foreign
producer wrote straight into ``tweets``), no layer may crash, and the serving view must equal
the expectation computed here without the invalid records. SQL-looking and format-string
locations are valid tweets and must come out as the plain strings they are.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from helpers import (
    Delivery,
    all_records,
    as_dict,
    expected_view,
    produce,
    query,
    run_cli,
    tweet,
)

from lambda_demo.batch.run import run_batch
from lambda_demo.clients import kafka_io
from lambda_demo.clients.kafka_io import MAX_RECORD_BYTES
from lambda_demo.contract import FlatTweet
from lambda_demo.ingestion.clock import to_millis
from lambda_demo.ingestion.replay import replay
from lambda_demo.serving import reads
from lambda_demo.serving.check import check
from lambda_demo.settings import Settings
from lambda_demo.speed.run import run_speed
from lambda_demo.status import status

pytestmark = [pytest.mark.drills, pytest.mark.integration]

SQL_LOCATION = "'); DROP TABLE raw_tweets; --"
FORMAT_LOCATION = "%s %n {0}"
DAY = datetime(2026, 11, 1, tzinfo=UTC)
CUTOFF_ALL = date(2100, 1, 1)  # the batch view covers every ingest day


def _letters(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choices(string.ascii_letters, k=n))


def api_line(
    tweet_id: int | str,
    location: object,
    *,
    followers: object = 5,
    likes: object = 1,
    created_at: str = "2026-11-01T10:00:00.000Z",
    text: str = "hello",
) -> bytes:
    """One X API v2 filtered-stream line (the replay file format)."""
    record = {
        "data": {
            "id": str(tweet_id),
            "text": text,
            "created_at": created_at,
            "author_id": "7",
            "lang": "en",
            "edit_history_tweet_ids": [str(tweet_id)],
            "public_metrics": {
                "retweet_count": 0,
                "reply_count": 0,
                "like_count": likes,
                "quote_count": 0,
            },
        },
        "includes": {
            "users": [
                {
                    "id": "7",
                    "name": "n",
                    "username": "u",
                    "location": location,
                    "public_metrics": {
                        "followers_count": followers,
                        "following_count": 0,
                        "tweet_count": 1,
                        "listed_count": 0,
                    },
                }
            ]
        },
    }
    return json.dumps(record, ensure_ascii=False).encode()


def flat(tweet_id: int | str, location: str, **fields: object) -> dict:
    record = {
        "v": 1,
        "tweet_id": str(tweet_id),
        "created_at": "2026-11-01T10:00:00.000Z",
        "author_id": "7",
        "location": location,
        "followers_count": 3,
        "like_count": 2,
        "retweet_count": 1,
        "hashtags": [],
        "lang": "en",
        "text": "hi",
    }
    record.update(fields)
    return record


def _b(record: dict) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


YEAR_1 = "0001-01-01T00:00:00Z"
YEAR_9999 = "9999-12-31T23:59:59Z"
YEAR_10000 = "10000-01-01T00:00:00Z"
DEEP = b'{"v":1,"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"

# Foreign producer: (label, key, value, expected reason or None if valid)
FOREIGN: list[tuple[str, bytes | None, bytes | None, str | None]] = [
    ("huge_1mb", b"9001", _b(flat(9001, "Huge", text=_letters(1 << 20, 1))), None),
    ("deeply_nested", b"9002", DEEP, "not_json"),
    ("invalid_utf8", b"9003", b'{"v":1,"tweet_id":"9003","location":"\xff\xfe"}', "not_utf8"),
    ("raw_nul_in_json", b"9004", _b(flat(9004, "Bern")).replace(b"Bern", b"Be\x00rn"), "not_json"),
    ("raw_nul_bytes", b"9005", b"\x00\x00\x00", "not_json"),
    ("escaped_nul_location", b"9006", _b(flat(9006, "Ba\u0000sel")), "nul_character"),
    ("sql_location", b"9007", _b(flat(9007, SQL_LOCATION)), None),
    ("format_location", b"9008", _b(flat(9008, FORMAT_LOCATION)), None),
    ("followers_2_64", b"9009", _b(flat(9009, "B", followers_count=2**64)), "bad_followers_count"),
    ("likes_minus_2_64", b"9010", _b(flat(9010, "Big", like_count=-(2**64))), "bad_like_count"),
    ("id_2_70", b"9011", _b(flat(2**70, "Big")), "id_out_of_range"),
    ("created_year_1", b"9012", _b(flat(9012, "Past", created_at=YEAR_1)), None),
    ("created_year_9999", b"9013", _b(flat(9013, "Future", created_at=YEAR_9999)), None),
    ("empty_key", b"", _b(flat(9014, "Empty key")), None),
    ("null_key", None, _b(flat(9015, "Null key")), None),
    ("tombstone", b"9016", None, "null_value"),
    ("tombstone_empty_key", b"", None, "null_value"),
]

# base64 of random bytes: 6 bits per character, so gzip cannot bring 1.6 MB under 1 MB.
INCOMPRESSIBLE_TEXT = base64.b64encode(random.Random(3).randbytes(1_200_000)).decode()

# Replay path: (label, line, expected DLQ reason, None if valid, or "failed" if Kafka refuses)
REPLAYED: list[tuple[str, bytes, str | None]] = [
    ("plain", api_line(101, "Plain"), None),
    ("huge_1mb_text", api_line(102, "Huge", text=_letters(1 << 20, 2)), None),
    ("deeply_nested", DEEP, "not_json"),
    ("invalid_utf8", api_line(104, "Oslo").replace(b"Oslo", b"Os\xc3\x28lo"), "not_utf8"),
    ("raw_nul_in_json", api_line(105, "Bern").replace(b"Bern", b"Be\x00rn"), "not_json"),
    ("escaped_nul_location", api_line(106, "Ba\u0000sel"), "nul_character"),
    ("sql_location", api_line(107, SQL_LOCATION), None),
    ("format_location", api_line(108, FORMAT_LOCATION), None),
    ("followers_2_64", api_line(109, "Big", followers=2**64), "bad_followers_count"),
    ("likes_1e30_float", api_line(110, "Big", likes=1e30), "bad_like_count"),
    ("id_2_64", api_line(2**64, "Big"), "id_out_of_range"),
    ("created_year_1", api_line(111, "Past", created_at="0001-01-01T00:00:00.000Z"), None),
    ("created_year_10000", api_line(112, "Far", created_at=YEAR_10000), "bad_created_at"),
    ("json_null", b"null", "not_object"),
    ("blank_line", b"   ", "skipped"),
    ("plain_again", api_line(113, "Plain", created_at="2026-11-01T11:00:00.000Z"), None),
]


def _quarantine(settings: Settings) -> dict[str, Counter]:
    out: dict[str, Counter] = defaultdict(Counter)
    for layer, reason in query(settings, "SELECT layer, reason FROM quarantine"):
        out[layer][reason] += 1
    return out


def test_hostile_records_get_reasons_and_never_crash_a_layer(
    settings: Settings, spark, tmp_path: Path
) -> None:
    # 1. A foreign producer writes straight into `tweets`.
    producer = kafka_io.producer(settings)
    futures = []
    for i, (_label, key, value, _reason) in enumerate(FOREIGN):
        ms = to_millis(DAY + timedelta(minutes=i))
        futures.append(producer.send(settings.topic, key=key, value=value, timestamp_ms=ms))
    producer.flush()
    producer.close()
    for future in futures:
        future.get(timeout=30)  # every foreign record reached Kafka (the 1 MB one included)

    # 2. The replay handler reads a crafted file.
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(line for _label, line, _reason in REPLAYED) + b"\n")
    counts = replay(files=[path], settings=settings, progress=False)

    valid_replayed = [label for label, _line, reason in REPLAYED if reason is None]
    dlq_expected = {
        str(i): reason for i, (_l, _b, reason) in enumerate(REPLAYED) if reason not in SKIP
    }
    assert counts.produced == len(valid_replayed)
    assert counts.failed == 0
    assert counts.dead_lettered == len(dlq_expected)
    dead_letters = all_records(settings, settings.dlq_topic)
    dlq = {
        dict(r.headers)["replay-line"].decode(): dict(r.headers)["reason"].decode()
        for r in dead_letters
    }
    assert dlq == dlq_expected
    assert all(dict(r.headers)["detail"] for r in dead_letters)

    # 3. Every layer runs to completion on this topic.
    run_speed(settings, once=True)
    run_batch(settings, cutoff=CUTOFF_ALL, progress=False)
    result = check(settings)
    assert result.ok, str(result)

    # 4. Reasons in both layers' quarantine, the same in each.
    foreign_reasons = Counter(reason for *_x, reason in FOREIGN if reason is not None)
    quarantined = _quarantine(settings)
    assert quarantined["batch"] == foreign_reasons
    assert quarantined["speed"] == foreign_reasons

    # 5. The serving view is exactly the valid tweets, hostile strings kept verbatim.
    expected: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for label, _key, value, reason in FOREIGN:
        if reason is None:
            parsed = FlatTweet.from_json_bytes(value)
            row = expected[parsed.location]
            for n, v in enumerate((1, 3, 2, 1)):
                row[n] += v
            assert label
    for _label, line, reason in REPLAYED:
        if reason is None:
            location = json.loads(line)["includes"]["users"][0]["location"]
            row = expected[location]
            for n, v in enumerate((1, 5, 1, 0)):
                row[n] += v
    actual = as_dict(reads.serving_view(settings))
    assert actual == dict(expected)
    assert actual[SQL_LOCATION] == [2, 8, 3, 1]
    assert actual[FORMAT_LOCATION] == [2, 8, 3, 1]
    stored = query(settings, "SELECT COUNT(*) FROM raw_tweets WHERE location = %s", (SQL_LOCATION,))
    assert stored == [(2,)]  # one per door: the table is still there, the string is data


SKIP = {None, "skipped"}


def test_a_record_over_a_megabyte_is_delivered_and_counted(
    settings: Settings, tmp_path: Path
) -> None:
    """A valid tweet with a 1.6 MB text is a tweet: delivered, and counted, with its neighbours."""
    path = tmp_path / "big.jsonl"
    lines = [
        api_line(201, "Before"),
        api_line(202, "Huger", text=INCOMPRESSIBLE_TEXT),
        *(api_line(203 + i, "After", created_at=f"2026-11-01T10:0{i}:00.000Z") for i in range(5)),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    counts = replay(files=[path], settings=settings, progress=False)
    assert (counts.produced, counts.failed) == (7, 0)
    run_speed(settings, once=True)
    result = check(settings)
    assert result.ok and result.tweets == 7


def test_a_line_too_big_for_kafka_is_dead_lettered_with_its_head(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "huge.jsonl"
    huge = api_line(301, "Huge", text="x" * (MAX_RECORD_BYTES + 1))
    path.write_bytes(huge + b"\n" + api_line(302, "Fine") + b"\n")
    counts = replay(files=[path], settings=settings, progress=False)
    assert (counts.produced, counts.dead_lettered, counts.failed) == (1, 1, 0)
    assert counts.reasons == {"too_large": 1}


def test_an_ingest_time_in_year_9999_does_not_crash_the_speed_layer(
    settings: Settings, spark
) -> None:
    """What a replay of a tweet dated 9999 produces: a Kafka timestamp in year 9999."""
    producer = kafka_io.producer(settings)
    ms = to_millis(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))
    producer.send(settings.topic, key=b"1", value=_b(flat(1, "Future")), timestamp_ms=ms)
    producer.flush()
    producer.close()
    run_speed(settings, once=True)
    assert check(settings).ok


POISON_COUNT = 2**62  # two of these in one location overflow a 64-bit sum


def _honest(first_id: int, start: datetime, n: int) -> list[Delivery]:
    """n tweets, 20 minutes apart, keyed by id so that they spread over every partition."""
    places = ["Quito", "Lima", "La Paz"]
    return [
        Delivery(start + timedelta(minutes=20 * i), tweet(first_id + i, places[i % 3], 10, 2, 1))
        for i in range(n)
    ]


def test_poison_pills_never_stop_a_layer(
    settings: Settings, spark, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Overflowing counts, impossible timestamps and a record stamped far ahead, both doors.

    The speed layer and the batch layer (through the CLI, exit status 0) keep working, quarantine
    the same records for the same reasons, and the record stamped in 2100 does not drag the
    watermark: the honest tweets that follow it are counted by the speed layer, none is late.
    """
    before = _honest(1, DAY, 60)  # DAY 00:00 .. 19:40
    after = _honest(1000, DAY + timedelta(hours=20), 60)  # DAY 20:00 .. DAY+1 15:40
    produce(settings, before)

    # The foreign door: straight into `tweets`.
    ahead = datetime(2100, 6, 1, tzinfo=UTC)
    foreign = [
        (DAY + timedelta(hours=20), _b(flat(9101, "Overflow", followers_count=POISON_COUNT))),
        (DAY + timedelta(hours=20), _b(flat(9102, "Overflow", followers_count=POISON_COUNT))),
        (ahead, _b(flat(9103, "Ahead"))),
    ]
    impossible = [  # (ms, value): Kafka accepts any 64-bit timestamp
        (to_millis(datetime(9999, 12, 31, tzinfo=UTC)) + 2 * 86_400_000, _b(flat(9104, "Far"))),
        (to_millis(datetime(1990, 1, 1, tzinfo=UTC)), _b(flat(9105, "Past"))),
        (-1, _b(flat(9106, "Unstamped"))),
    ]
    producer = kafka_io.producer(settings)
    futures = [
        producer.send(settings.topic, key=value[-40:], value=value, timestamp_ms=to_millis(ts))
        for ts, value in foreign
    ]
    futures += [
        producer.send(settings.topic, key=value[-40:], value=value, timestamp_ms=ms)
        for ms, value in impossible
    ]
    producer.flush()
    producer.close()
    for future in futures:
        future.get(timeout=30)
    run_speed(settings, once=True)
    produce(settings, after)
    # And one more stamped in 2100, now the last record of partition 0.
    producer = kafka_io.producer(settings)
    last = _b(flat(9107, "Ahead"))
    producer.send(settings.topic, value=last, partition=0, timestamp_ms=to_millis(ahead))
    producer.flush()
    producer.close()

    # The replay door: the handler dead-letters what every layer would quarantine.
    poison_line = tmp_path / "poison.jsonl"
    poison_line.write_bytes(api_line(9201, "Overflow", followers=POISON_COUNT) + b"\n")
    old_line = tmp_path / "old.jsonl"
    old_line.write_bytes(api_line(9202, "Old", created_at="2005-06-01T10:00:00.000Z") + b"\n")
    for path, reason in ((poison_line, "bad_followers_count"), (old_line, "bad_ingest_time")):
        counts = replay(files=[path], settings=settings, progress=False)
        assert (counts.produced, counts.dead_lettered, counts.reasons) == (0, 1, {reason: 1})

    speed = run_cli(cli_env, "speed", "--once")
    assert speed.returncode == 0, speed.stderr[-2000:]
    served = as_dict(reads.serving_view(settings))
    honest = expected_view(before + after)
    assert {k: v for k, v in served.items() if k in honest} == honest  # all counted, fresh
    assert served["Ahead"] == [2, 6, 4, 2]
    assert "Overflow" not in served
    figures = status(settings)
    assert figures["speed"]["late_rows"] == 0
    assert figures["speed"]["watermark"] < "2026-11-03"  # not dragged to 2100

    batch = run_cli(cli_env, "batch")
    assert batch.returncode == 0, batch.stderr[-2000:]
    # The pipeline clock ignores partition 0, whose last record is stamped in 2100.
    assert reads.batch_cutoff(settings) == (DAY + timedelta(days=1)).date().isoformat()
    result = check(settings)
    assert result.ok, str(result)

    reasons = Counter({"bad_followers_count": 2, "bad_ingest_time": len(impossible)})
    quarantined = _quarantine(settings)
    assert quarantined["speed"] == reasons
    assert quarantined["batch"] == reasons
