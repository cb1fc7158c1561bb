"""The simulated clock, ingest-time arithmetic, the up-front partitioner and the handler."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from helpers import FakeTime

from lambda_demo.ingestion.clock import SimulatedClock, from_millis, to_millis
from lambda_demo.ingestion.handler import TweetHandler, partition_for

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def test_ingest_time_is_a_running_max_of_due_times() -> None:
    clock = SimulatedClock(speedup=0)
    dues = [T0, T0 + timedelta(minutes=5), T0 + timedelta(minutes=1), None, T0 + timedelta(hours=1)]
    got = [clock.tick(d) for d in dues]
    five = T0 + timedelta(minutes=5)
    assert got == [T0, five, five, five, T0 + timedelta(hours=1)]


def test_paced_clock_sleeps_simulated_time_divided_by_speedup() -> None:
    fake = FakeTime()
    clock = SimulatedClock(speedup=60, sleep=fake.sleep, monotonic=fake.monotonic)
    clock.tick(T0)
    clock.tick(T0 + timedelta(minutes=10))  # 600 simulated seconds / 60 = 10 wall seconds
    assert fake.slept == [pytest.approx(10.0)]
    clock.tick(T0 + timedelta(minutes=5))  # late: sent at once, no sleep
    assert len(fake.slept) == 1


def test_unpaced_tick_fast_forwards_and_reanchors() -> None:
    fake = FakeTime()
    clock = SimulatedClock(speedup=60, sleep=fake.sleep, monotonic=fake.monotonic)
    clock.tick(T0)
    assert clock.tick(T0 + timedelta(hours=5), pace=False) == T0 + timedelta(hours=5)
    clock.tick(T0 + timedelta(hours=5, minutes=1))  # paced again from the new anchor
    assert fake.slept == [pytest.approx(1.0)]


def test_negative_speedup_is_refused() -> None:
    with pytest.raises(ValueError, match="speedup"):
        SimulatedClock(speedup=-1)


@pytest.mark.parametrize("ms", [0, 1, 1_761_955_200_123, 1_761_955_200_999, 2**41 + 7])
def test_millis_round_trip_exactly(ms: int) -> None:
    assert to_millis(from_millis(ms)) == ms


def test_to_millis_does_not_lose_a_millisecond_to_float_rounding() -> None:
    moment = datetime(2026, 11, 1, 0, 0, 0, 123000, tzinfo=UTC)
    assert to_millis(moment) % 1000 == 123


# murmur2 values from the Java client's own unit tests (Kafka's UtilsTest).
JAVA_MURMUR2 = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


@pytest.mark.parametrize(("key", "java_hash"), JAVA_MURMUR2)
@pytest.mark.parametrize("partitions", [1, 3, 7])
def test_partition_for_matches_the_java_client(key: bytes, java_hash: int, partitions: int) -> None:
    assert partition_for(key, partitions) == (java_hash & 0x7FFFFFFF) % partitions


# --- the handler -----------------------------------------------------------------------------


class FakeFuture:
    def __init__(self) -> None:
        self.errbacks: list[Any] = []

    def add_errback(self, callback: Any) -> FakeFuture:
        self.errbacks.append(callback)
        return self


class FakeProducer:
    """Records every ``send``, as keyword arguments plus the topic, instead of sending."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, topic: str, **kwargs: Any) -> FakeFuture:
        self.sent.append({"topic": topic, **kwargs})
        return FakeFuture()

    def flush(self) -> None:
        pass


RAW_TWEET = json.dumps(
    {
        "data": {
            "id": "1859000000000000001",
            "text": "hello",
            "author_id": "42",
            "created_at": "2026-11-01T20:15:00.000Z",
            "lang": "en",
            "edit_history_tweet_ids": ["1859000000000000001"],
            "public_metrics": {"retweet_count": 2, "like_count": 7},
        },
        "includes": {
            "users": [
                {
                    "id": "42",
                    "username": "ada",
                    "name": "Ada",
                    "location": "London",
                    "public_metrics": {"followers_count": 1000},
                }
            ]
        },
    }
).encode()
FLAT_JSON = (
    b'{"v":1,"tweet_id":"1859000000000000001","created_at":"2026-11-01T20:15:00.000Z",'
    b'"author_id":"42","location":"London","followers_count":1000,"like_count":7,'
    b'"retweet_count":2,"hashtags":[],"lang":"en","text":"hello"}'
)
FIRST_TWEET_MS = 1_142_899_200_000  # 2006-03-21T00:00:00.000Z, written out by hand
LAST_INGEST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
MS_1990 = 631_152_000_000  # 1990-01-01T00:00:00.000Z


def handler() -> tuple[TweetHandler, FakeProducer]:
    producer = FakeProducer()
    return TweetHandler(producer, topic="tweets", dlq_topic="tweets.dlq", partitions=3), producer


@pytest.mark.parametrize("ingest_ms", [FIRST_TWEET_MS, 1_793_564_100_000, LAST_INGEST_MS])
def test_handler_produces_a_valid_tweet_ingested_in_range(ingest_ms: int) -> None:
    tweets, producer = handler()
    tweets.handle(RAW_TWEET, ingest_ms=ingest_ms, headers=[("source", b"replay")])
    (sent,) = producer.sent
    key = b"1859000000000000001"
    assert sent == {
        "topic": "tweets",
        "value": FLAT_JSON,
        "key": key,
        "partition": partition_for(key, 3),
        "timestamp_ms": ingest_ms,
        "headers": [("source", b"replay")],
    }
    assert (tweets.counts.read, tweets.counts.produced, tweets.counts.dead_lettered) == (1, 1, 0)
    assert tweets.counts.reasons == {}


@pytest.mark.parametrize(
    "ingest_ms",
    [MS_1990, FIRST_TWEET_MS - 1, 0, -1, LAST_INGEST_MS + 1, 253_402_300_800_000],
)
def test_handler_dead_letters_a_valid_tweet_with_an_impossible_ingest_time(ingest_ms: int) -> None:
    tweets, producer = handler()
    tweets.handle(RAW_TWEET, ingest_ms=ingest_ms, headers=[("source", b"replay")])
    (sent,) = producer.sent
    assert sent["topic"] == "tweets.dlq"
    assert sent["partition"] == 0
    assert sent["key"] is None
    assert sent["value"] == RAW_TWEET  # the original bytes, as for every dead letter
    assert sent["timestamp_ms"] == ingest_ms
    headers = sent["headers"]
    assert [name for name, _ in headers] == ["source", "reason", "detail"]
    assert headers[0] == ("source", b"replay")
    assert headers[1] == ("reason", b"bad_ingest_time")
    assert headers[2][1]  # a human-readable detail
    assert (tweets.counts.read, tweets.counts.produced, tweets.counts.dead_lettered) == (1, 0, 1)
    assert tweets.counts.reasons == {"bad_ingest_time": 1}


def test_handler_counts_dead_letters_for_bad_ingest_times_among_good_ones() -> None:
    tweets, producer = handler()
    for ms in [MS_1990, 1_793_564_100_000, MS_1990 + 1]:
        tweets.handle(RAW_TWEET, ingest_ms=ms)
    assert [s["topic"] for s in producer.sent] == ["tweets.dlq", "tweets", "tweets.dlq"]
    assert (tweets.counts.read, tweets.counts.produced, tweets.counts.dead_lettered) == (3, 1, 2)
    assert tweets.counts.reasons == {"bad_ingest_time": 2}


# --- a tweet dated far in the future (moved here from the hostile-input drill) ---------------


def test_a_far_future_created_at_does_not_stall_a_paced_replay() -> None:
    """A paced replay (``--speedup 2400``, as in ``demo``) must not wait for year 9999."""
    waits: list[float] = []
    clock = SimulatedClock(speedup=2400, sleep=waits.append, monotonic=lambda: 0.0)
    clock.tick(datetime(2026, 11, 1, tzinfo=UTC))
    clock.tick(datetime(9999, 12, 31, tzinfo=UTC))
    assert max(waits, default=0) < 24 * 3600, f"the replay would sleep {max(waits):.3g} s"


def test_a_far_future_created_at_does_not_hijack_the_replay_clock() -> None:
    """After one tweet dated 9999, the next honest tweet still gets an honest ingest time."""
    clock = SimulatedClock(speedup=0)
    clock.tick(datetime(2026, 11, 1, 10, tzinfo=UTC))
    clock.tick(datetime(9999, 12, 31, tzinfo=UTC))
    honest = clock.tick(datetime(2026, 11, 1, 10, 5, tzinfo=UTC))
    assert honest.year == 2026, f"an honest tweet was stamped {honest.isoformat()}"
