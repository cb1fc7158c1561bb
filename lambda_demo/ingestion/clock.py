"""Time, in one place: the replay's simulated clock, epoch milliseconds, the one UTC format,
and the one way to wait for something.

**The simulated clock** plays several days of tweets in a few minutes.

The clock starts at the first tweet's ``created_at`` (or a chosen start) and runs ``speedup``
times faster than the wall clock; ``speedup=0`` means "as fast as possible". A tweet is sent
when the clock reaches its due time; its **ingest time** (the Kafka record timestamp) is the
clock's reading at that moment.

The reading is *logical*: ``ingest = max(due, previous ingest)``. So a late (out-of-order)
tweet or a duplicate gets the clock's current time, and the ingest times of a replay are the
same at any speed-up. That makes every replay reproducible, which tests and learners love.

**An instant in words** is `format_utc`'s ``YYYY-MM-DDTHH:MM:SS.fffZ``, the X API's and
Spark's own notation; a day is ``date.isoformat()``. **Waiting** for something (a lock, a
topic deletion) is `wait_until`, which says in words what it waited for when time runs out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from lambda_demo.errors import LambdaDemoError

T = TypeVar("T")

# A created_at further ahead of the clock than this is not trusted to move it: one tweet dated
# 9999 would otherwise stall a paced replay for ever, or stamp every later tweet in 9999.
# (Replaying files weeks apart? Replay them one after the other.)
MAX_AHEAD = timedelta(days=7)


class SimulatedClock:
    """A logical clock that can pace itself against the wall clock."""

    def __init__(self, *, speedup: float, sleep=time.sleep, monotonic=time.monotonic) -> None:
        if speedup < 0:
            raise ValueError("speedup must be >= 0 (0 means as fast as possible)")
        self.speedup = speedup
        self._sleep = sleep
        self._monotonic = monotonic
        self._origin_sim: datetime | None = None
        self._origin_wall = 0.0
        self.now: datetime | None = None

    def start(self, at: datetime) -> None:
        """Set the clock; the pacing against the wall clock starts here."""
        self._origin_sim = at
        self._origin_wall = self._monotonic()
        self.now = at

    def tick(self, due: datetime | None, *, pace: bool = True) -> datetime:
        """Wait (if paced) until ``due``, then return the ingest time for that record.

        ``pace=False`` jumps to ``due`` at once and re-anchors the pacing there: a resumed
        replay fast-forwards through what Kafka already has, then plays on at speed.
        """
        if self.now is None:
            self.start(due or datetime.now(UTC))
        assert self.now is not None
        if due is None or due <= self.now or due - self.now > MAX_AHEAD:
            return self.now  # late, undatable or implausible: sent now, at the clock's time
        if not pace:
            self.start(due)
            return due
        if self.speedup > 0:
            assert self._origin_sim is not None
            sim_seconds = (due - self._origin_sim).total_seconds()
            delay = self._origin_wall + sim_seconds / self.speedup - self._monotonic()
            if delay > 0:
                self._sleep(delay)
        self.now = due
        return due


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_millis(moment: datetime) -> int:
    """Exact epoch milliseconds (integer arithmetic: floats would round some values down)."""
    return (moment - EPOCH) // timedelta(milliseconds=1)


def from_millis(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def format_utc(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.fffZ`` in UTC: the one way an instant is written down.

    Formatted by hand, since ``strftime`` drops a year's leading zeros on some platforms.
    An aware datetime in another zone is converted first; a naive one is refused, since its
    zone would be a guess.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"format_utc needs an aware datetime, got naive {moment!r}")
    moment = moment.astimezone(UTC)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}."
        f"{moment.microsecond // 1000:03d}Z"
    )


def wait_until(
    predicate: Callable[[], T],
    timeout_seconds: float,
    what: str,
    *,
    hint: str = "",
    interval_seconds: float = 0.5,
    error: type[LambdaDemoError] = LambdaDemoError,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> T:
    """Call ``predicate`` every ``interval_seconds`` until it returns a true value; return it.

    It is always called at least once (a zero timeout means "try once"). When it is still
    false after ``timeout_seconds``, raises ``error`` (a `LambdaDemoError`) that names
    ``what`` was awaited, followed by ``hint`` (what to do about it).
    """
    deadline = monotonic() + timeout_seconds
    while True:
        result = predicate()
        if result:
            return result
        if monotonic() >= deadline:
            message = f"Gave up after {timeout_seconds:g} s waiting for {what}."
            raise error(f"{message} {hint}" if hint else message)
        sleep(interval_seconds)
