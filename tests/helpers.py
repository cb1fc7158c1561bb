"""Test helpers, each in one place.

Stack homes and isolated settings, the ``lambda-demo`` command line, whole-topic readers and
warehouse queries (independent of the layers under test), waiting for observable state, and
tweet records with the view computed independently of the code under test.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from kafka import TopicPartition

from lambda_demo import view
from lambda_demo.clients import kafka_io, storage, warehouse
from lambda_demo.contract import FlatTweet
from lambda_demo.settings import REPO_ROOT, Settings
from lambda_demo.settings import isolated_settings as package_isolated_settings

T = TypeVar("T")

# --- stack homes and settings ----------------------------------------------------------------


def new_home() -> Path:
    """A fresh LAMBDA_DEMO_HOME outside pytest's tmp tree.

    Under root, PostgreSQL runs as an unprivileged user that must traverse the path, and
    pytest resets its own ``pytest-of-<user>`` folder to mode 0700 at every start.
    """
    return Path(tempfile.mkdtemp(prefix="lambda-demo-test-"))


@contextlib.contextmanager
def private_stack(*, start: bool = True) -> Iterator[Settings]:
    """Settings of a stack of its own in a fresh home (started unless ``start=False``).

    The stack is stopped and its home deleted at the end, whatever happened.
    """
    from lambda_demo import stack

    settings = Settings(home=new_home())
    try:
        if start:
            stack.up(settings)
        yield settings
    finally:
        stack.reset(settings)


def isolated_settings(home: Path, **overrides: object) -> Settings:
    """Settings with names no other test uses (short trigger for streaming tests)."""
    return package_isolated_settings(home, **{"trigger_seconds": 0.5, **overrides})


def ready(settings: Settings) -> Settings:
    """Create the topics, bucket and warehouse schema of ``settings``; return them."""
    kafka_io.ensure_topics(settings)
    storage.ensure_bucket(settings)
    warehouse.ensure_schema(settings)
    return settings


# --- the command line ------------------------------------------------------------------------


def env_for(settings: Settings) -> dict[str, str]:
    """The process environment plus the ``LAMBDA_DEMO_*`` variables that select ``settings``."""
    env = dict(os.environ)
    for name in ("home", "topic", "dlq_topic", "s3_bucket", "warehouse_schema"):
        env[f"LAMBDA_DEMO_{name.upper()}"] = str(getattr(settings, name))
    env["LAMBDA_DEMO_CHECKPOINT_LOCATION"] = settings.checkpoints
    return env


def cli_command(*args: str) -> list[str]:
    """The argv of ``lambda-demo <args>`` run by this interpreter (for ``subprocess.Popen``)."""
    return [sys.executable, "-m", "lambda_demo.cli", *args]


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 600, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``lambda-demo <args>`` to the end; its exit status and output are the caller's."""
    return subprocess.run(
        cli_command(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


# --- reading what the layers wrote, without the layers ------------------------------------


def end_offsets(settings: Settings, topic: str | None = None) -> dict[TopicPartition, int]:
    """The next offset of every partition of ``topic`` (the tweets topic by default)."""
    topic = topic or settings.topic
    consumer = kafka_io.consumer(settings, request_timeout_ms=5000)
    with contextlib.closing(consumer):
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        return consumer.end_offsets(partitions)


def topic_size(settings: Settings, topic: str | None = None) -> int:
    """How many records ``topic`` holds (the tweets topic by default)."""
    return sum(end_offsets(settings, topic).values())


def all_records(settings: Settings, topic: str) -> list:
    """Every record of ``topic``, read with a plain consumer (independent of the layers)."""
    consumer = kafka_io.consumer(settings, consumer_timeout_ms=5000)
    with contextlib.closing(consumer):
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        return list(consumer)


def query(settings: Settings, statement: str, params: tuple = ()) -> list[tuple]:
    """The rows of one statement in the warehouse schema of ``settings`` (committed)."""
    conn = warehouse.connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()
    finally:
        conn.close()


def speed_by_day(settings: Settings) -> dict:
    """``speed_view`` as {(ingest day, location): [four measures]}."""
    rows = query(
        settings,
        "SELECT ingest_day, location, tweet_count, followers_sum, likes_sum, retweets_sum "
        "FROM speed_view",
    )
    return {(r[0], r[1]): list(r[2:]) for r in rows}


def committed_speed_batch(settings: Settings) -> int:
    """The newest micro-batch id a speed deployment committed to the warehouse (-1: none)."""
    return query(settings, "SELECT COALESCE(MAX(batch_id), -1) FROM speed_deployments")[0][0]


def planned_speed_offsets(settings: Settings, checkpoint_name: str = "speed_view") -> int:
    """How far into the tweets topic the newest planned micro-batch reads (records, summed
    over partitions; 0 if none is planned yet).

    Spark writes ``offsets/<batch id>`` to the query's checkpoint before it runs the batch:
    a version line, a metadata line, then one line of end offsets per source (the speed
    layer reads each partition as a source of its own, ``-`` for one without an offset).
    """
    folder = Path(settings.checkpoints) / checkpoint_name / "offsets"
    ids = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    if not ids:
        return 0
    sources = (folder / str(max(ids))).read_text().splitlines()[2:]
    return sum(
        sum(json.loads(line).get(settings.topic, {}).values())
        for line in sources
        if line.startswith("{")
    )


# --- waiting ---------------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], T], timeout: float, what: str, *, interval: float = 0.2
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Fails after ``timeout`` seconds, naming ``what`` was awaited. An exception raised by the
    predicate (say, an assertion that a process is still running) ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# --- the repository --------------------------------------------------------------------------


def tracked_files() -> list[Path]:
    """Every file git tracks in this checkout."""
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout
    return [REPO_ROOT / name.decode() for name in out.split(b"\0") if name]


# --- tweets and the expected view ------------------------------------------------------------

DAY0 = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Delivery:
    """One record as produced: a valid tweet (``tweet`` set) or garbage bytes."""

    ts: datetime
    tweet: FlatTweet | None = None
    garbage: bytes | None = None

    @property
    def value(self) -> bytes:
        return self.tweet.to_json_bytes() if self.tweet else self.garbage  # type: ignore[return-value]


def tweet(
    tweet_id: int | str, location: str, followers: int = 1, likes: int = 0, retweets: int = 0
):
    return FlatTweet(
        tweet_id=str(tweet_id),
        created_at="2026-11-01T00:00:00.000Z",
        author_id="1",
        location=location,
        followers_count=followers,
        like_count=likes,
        retweet_count=retweets,
        hashtags=(),
        lang="en",
        text="hello",
    )


def produce(settings: Settings, deliveries: list[Delivery]) -> None:
    """Send in list order, keyed by tweet id like the real handler, and wait for the acks."""
    producer = kafka_io.producer(settings)
    for d in deliveries:
        key = d.tweet.tweet_id.encode() if d.tweet else None
        ms = (d.ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
        producer.send(settings.topic, key=key, value=d.value, timestamp_ms=ms)
    producer.flush()
    producer.close()


def expected_by_day(deliveries: list[Delivery]) -> dict[tuple[date, str], list[int]]:
    """Per (ingest day, location): [count, followers, likes, retweets], first delivery wins.

    Deliveries are in production order with non-decreasing timestamps per tweet id, so the
    first one in the list is the first delivery.
    """
    seen: set[str] = set()
    out: dict[tuple[date, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for d in deliveries:
        if d.tweet is None or d.tweet.tweet_id in seen:
            continue
        seen.add(d.tweet.tweet_id)
        row = out[(d.ts.date(), d.tweet.location)]
        row[0] += 1
        row[1] += d.tweet.followers_count
        row[2] += d.tweet.like_count
        row[3] += d.tweet.retweet_count
    return dict(out)


def expected_view(deliveries: list[Delivery], *, from_day: date | None = None) -> dict:
    """Per location, summed over days (optionally only days >= ``from_day``)."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for (day, location), row in expected_by_day(deliveries).items():
        if from_day is None or day >= from_day:
            out[location] = [a + b for a, b in zip(out[location], row, strict=True)]
    return dict(out)


def as_dict(frame) -> dict:
    """A view DataFrame (location + four measures) as {location: [four ints]}."""
    return {
        row[0]: [int(v) for v in row[1:]]
        for row in frame[
            ["location", "tweet_count", "followers_sum", "likes_sum", "retweets_sum"]
        ].itertuples(index=False)
    }


HASHTAGS_SUM = view.Measure("hashtags_sum", reads="hashtag_count")
"""A measure no layer knows: the number of hashtags per location."""


def add_hashtags_measure(monkeypatch: pytest.MonkeyPatch) -> None:
    """Add `HASHTAGS_SUM` at run time, as a learner would in the source: one line in the
    view's ``MEASURES``, plus the contract field it reads.

    The field, ``hashtag_count``, is derived from ``hashtags``, which every flat record
    already carries, so the records and their version stay as they are.
    """
    monkeypatch.setattr(
        FlatTweet, "hashtag_count", property(lambda t: len(t.hashtags)), raising=False
    )
    monkeypatch.setattr(view, "MEASURES", (*view.MEASURES, HASHTAGS_SUM))


class FakeTime:
    """A clock for code that takes ``sleep`` and ``monotonic``: sleeping moves it, at once."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
