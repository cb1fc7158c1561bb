"""Test helpers: produce flat tweet records and compute the expected view independently."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest
from kafka import TopicPartition

from lambda_demo import view
from lambda_demo.clients import kafka_io
from lambda_demo.contract import FlatTweet
from lambda_demo.settings import Settings

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


def all_records(settings: Settings, topic: str) -> list:
    """Every record of ``topic``, read with a plain consumer (independent of the layers)."""
    consumer = kafka_io.consumer(settings, consumer_timeout_ms=5000)
    with contextlib.closing(consumer):
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        return list(consumer)


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
