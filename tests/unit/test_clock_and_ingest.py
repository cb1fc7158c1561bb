"""The simulated clock, ingest-time arithmetic and the up-front partitioner."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lambda_demo.clock import SimulatedClock, from_millis, to_millis
from lambda_demo.ingest import partition_for

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


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
