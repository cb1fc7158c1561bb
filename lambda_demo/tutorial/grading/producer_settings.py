"""Exercise 01.1, a producer setting and its effect: every delivery of a tweet in one
partition, in order, each send acknowledged.

The answer is a dict of ``KafkaProducer`` settings. The grader builds a producer with them
(plus the bootstrap servers and a value serializer of its own), sends a scripted stream of
tweets to a three-partition topic of the exercise's own with ``send(topic, key=tweet,
value=tweet)``, and observes what happened: whether the position each send came back with
(partition and offset) is where the broker really wrote that record, and, read back from the
topic, each record's key and partition. The stream holds the
cases that tell a good key from the usual wrong ones: a tweet delivered again later with more
likes, and a tweet whose author changed their location between its two deliveries.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.serializer import Serializer

from lambda_demo.clients import kafka_io
from lambda_demo.contract import FlatTweet
from lambda_demo.settings import Settings
from lambda_demo.tutorial.grading.base import AnswerFailed, Exercise, Mistake

TOPIC = "grade-01.1"
PARTITIONS = 3
RUN_HEADER = "grade-run"
"""Each grading run tags its records, so runs sharing the topic never see each other's."""
SEND_HEADER = "grade-send"
"""The record's place in `STREAM`, to match what a send reported with what the topic holds."""
SEND_TIMEOUT_SECONDS = 10.0


def _tweet(tweet_id: str, location: str, likes: int = 0) -> FlatTweet:
    return FlatTweet(
        tweet_id=tweet_id,
        created_at="2026-11-01T10:00:00.000Z",
        author_id="a" + tweet_id,
        location=location,
        followers_count=100,
        like_count=likes,
        retweet_count=0,
        hashtags=(),
        lang="en",
        text="hello",
    )


#: Sent in this order. Tweets 301 and 303 are delivered twice, as a reconnect would.
STREAM: tuple[FlatTweet, ...] = (
    _tweet("301", "London"),
    _tweet("302", "Paris"),
    _tweet("303", "Tokyo"),
    _tweet("304", "Lagos"),
    _tweet("301", "London", likes=4),  # delivered again later: 4 likes by now
    _tweet("305", "London"),
    _tweet("306", "Berlin"),
    _tweet("303", "Tokyo, Japan"),  # its author edited their location in between
    _tweet("307", "Lima"),
    _tweet("308", "Paris"),
    _tweet("309", "Seoul"),
    _tweet("310", "(unknown)"),
)

GRADER_SETTINGS = ("bootstrap_servers", "value_serializer")


@dataclass(frozen=True)
class Effect:
    """What a producer's settings did to the scripted stream, as observed on the topic.

    ``split`` and ``partitions_used`` are None when records had no key: a keyless record's
    partition is the partitioner's random choice, not the answer's.
    """

    sends: int
    unacknowledged: int
    unkeyed: int
    rekeyed: tuple[str, ...]
    split: tuple[str, ...] | None
    partitions_used: int | None


class _KeySerializer(Serializer):
    """The answer's ``key_serializer`` function, in the form kafka-python expects."""

    def __init__(self, function: Callable[[FlatTweet], bytes | None]) -> None:
        self.function = function

    def serialize(self, topic: str, headers: list[tuple[str, bytes]], data: Any) -> Any:
        return self.function(data)


class _ValueSerializer(Serializer):
    def serialize(self, topic: str, headers: list[tuple[str, bytes]], data: Any) -> bytes:
        return data.to_json_bytes()


@dataclass(frozen=True)
class ProducerExercise(Exercise):
    """Settings for ``KafkaProducer``, judged by their effect on a real topic."""

    id: str
    task: str
    start: str
    reference: dict[str, Any]
    mistakes: tuple[Mistake, ...] = ()

    def prepare(self, settings: Settings) -> Settings:
        """The exercise's topic, three partitions (kept between gradings: runs are tagged).

        A new topic first gets the stream once from a producer that waits for the broker, so
        no answer's records start at offset 0: an offset a producer made up (acks=0 reports
        positions counted from 0) can then never be mistaken for a real one.
        """
        client = kafka_io.admin(settings)
        with contextlib.closing(client):
            if TOPIC not in set(client.list_topics()):
                with contextlib.suppress(TopicAlreadyExistsError):
                    client.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
        if not any(end for _, end in kafka_io.partition_offsets(settings, TOPIC).values()):
            self._send(
                {"acks": "all", "key_serializer": _KeySerializer(_by_tweet_id)}, settings, b"primer"
            )
        return settings

    def outcome(self, answer: dict[str, Any], scenario: Settings) -> Effect:
        """Send the stream with the answer's settings, then read back what the topic holds."""
        if not isinstance(answer, dict):
            raise AnswerFailed(
                f"the answer is a {type(answer).__name__}: give a dict of KafkaProducer "
                'settings, such as {"acks": "all", "key_serializer": ...}'
            )
        taken = [name for name in GRADER_SETTINGS if name in answer]
        if taken:
            raise AnswerFailed(f"leave {', '.join(taken)} to the grader: it sets them")
        config = dict(answer)
        if callable(config.get("key_serializer")):
            config["key_serializer"] = _KeySerializer(config["key_serializer"])
        run = uuid.uuid4().hex.encode()
        reported = self._send(config, scenario, run)
        records = self._read_back(scenario, run)
        return _effect(reported, records)

    def _send(
        self, config: dict[str, Any], settings: Settings, run: bytes
    ) -> list[tuple[int, int]]:
        """The (partition, offset) each send came back with."""
        try:
            producer = KafkaProducer(
                bootstrap_servers=kafka_io.bootstrap(settings),
                value_serializer=_ValueSerializer(),
                **config,
            )
        except (KafkaError, TypeError, ValueError, AssertionError) as exc:
            raise AnswerFailed(f"KafkaProducer refused these settings: {_first_line(exc)}") from exc
        try:
            futures = [
                producer.send(
                    TOPIC,
                    key=tweet,
                    value=tweet,
                    headers=[(RUN_HEADER, run), (SEND_HEADER, str(index).encode())],
                )
                for index, tweet in enumerate(STREAM)
            ]
            producer.flush(timeout=SEND_TIMEOUT_SECONDS)
            metadata = [future.get(timeout=SEND_TIMEOUT_SECONDS) for future in futures]
            return [(m.partition, m.offset) for m in metadata]
        except (KafkaError, TypeError, ValueError, AssertionError) as exc:
            raise AnswerFailed(
                "sending failed with these settings: "
                f"{_first_line(exc)} (the key_serializer gets a FlatTweet and must return bytes)"
            ) from exc
        finally:
            producer.close(timeout=SEND_TIMEOUT_SECONDS)

    def _read_back(self, settings: Settings, run: bytes) -> list[Written]:
        """This run's records, as the topic holds them."""
        consumer = kafka_io.consumer(settings)
        rows = []
        with contextlib.closing(consumer):
            offsets = kafka_io.partition_offsets(settings, TOPIC, consumer=consumer)
            for partition, (begin, end) in offsets.items():
                for record in kafka_io.read_range(
                    settings, TOPIC, partition, begin, end, consumer=consumer
                ):
                    headers = dict(record.headers or [])
                    if headers.get(RUN_HEADER) == run:
                        tweet = FlatTweet.from_json_bytes(record.value)
                        rows.append(
                            Written(
                                int(headers[SEND_HEADER]),
                                tweet.tweet_id,
                                record.key,
                                partition,
                                record.offset,
                            )
                        )
        return rows

    def expected(self) -> Effect:
        """Every send acknowledged, every record keyed, each tweet's deliveries under one key
        in one partition, and the stream spread over every partition."""
        return Effect(len(STREAM), 0, 0, (), (), PARTITIONS)

    def difference(self, expected: Effect, got: Effect) -> str | None:
        if got.unacknowledged != expected.unacknowledged:
            return (
                f"expected every send acknowledged with the offset the broker wrote it at, "
                f"but {got.unacknowledged} of {got.sends} came back with a position the broker "
                "never gave: the producer did not wait to learn whether, or where, it was written"
            )
        if got.unkeyed != expected.unkeyed:
            return (
                f"expected a key on every record, got {got.unkeyed} records without one: Kafka "
                "spreads keyless records over the partitions at random, so a tweet's two "
                "deliveries may land in different partitions"
            )
        if got.rekeyed != expected.rekeyed:
            return (
                f"expected one key per tweet, but the deliveries of tweet "
                f"{', '.join(got.rekeyed)} carry different keys, so they may land in different "
                "partitions and a consumer may meet the later delivery first"
            )
        if got.split != expected.split:
            return (
                f"expected each tweet's deliveries in one partition, but tweet "
                f"{', '.join(got.split or ())} is in several"
            )
        if got.partitions_used != expected.partitions_used:
            return (
                f"expected the stream spread over all {expected.partitions_used} partitions, "
                f"got every record in {got.partitions_used}: one partition takes the whole "
                "stream while the others, and the consumers reading them, idle"
            )
        return None


@dataclass(frozen=True)
class Written:
    """One record of a grading run, read back from the topic."""

    send: int
    tweet_id: str
    key: bytes | None
    partition: int
    offset: int


def _effect(reported: list[tuple[int, int]], records: list[Written]) -> Effect:
    keys: dict[str, set[bytes | None]] = defaultdict(set)
    partitions: dict[str, set[int]] = defaultdict(set)
    for record in records:
        keys[record.tweet_id].add(record.key)
        partitions[record.tweet_id].add(record.partition)
    where = {record.send: (record.partition, record.offset) for record in records}
    unkeyed = sum(1 for record in records if record.key is None)
    return Effect(
        sends=len(reported),
        unacknowledged=sum(1 for i, at in enumerate(reported) if where.get(i) != at),
        unkeyed=unkeyed,
        rekeyed=tuple(sorted(t for t, k in keys.items() if len(k) > 1)),
        split=None if unkeyed else tuple(sorted(t for t, p in partitions.items() if len(p) > 1)),
        partitions_used=None if unkeyed else len({r.partition for r in records}),
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _by_tweet_id(tweet: FlatTweet) -> bytes:
    return tweet.tweet_id.encode()


EXERCISE = ProducerExercise(
    id="01.1",
    task="Choose the producer settings that put every delivery of a tweet in one partition, "
    "in order, each send acknowledged by the broker.",
    start="assign a dict of KafkaProducer settings to a variable: an acks level, and a "
    "key_serializer, a function that gets the FlatTweet being sent and returns its key as "
    'bytes. For example {"acks": ..., "key_serializer": lambda tweet: ...}. Then call '
    "grade('01.1', your_settings).",
    reference={
        "acks": "all",
        "enable_idempotence": True,
        "key_serializer": _by_tweet_id,
    },
    mistakes=(
        Mistake(
            answer={"acks": 0, "key_serializer": _by_tweet_id},
            hint="acks=0 sends and forgets: the broker answers nothing, so a record lost on "
            "the way is lost silently, and the position the producer reports is made up. Use "
            "acks='all' (the leader confirms once every in-sync replica has the record).",
        ),
        Mistake(
            answer={"acks": "all", "key_serializer": lambda tweet: tweet.location.encode()},
            hint="keyed by location, a tweet changes key when its author edits their profile "
            "between two deliveries (and one busy city fills one partition). Key by what "
            "identifies the tweet and never changes: its tweet_id.",
        ),
        Mistake(
            answer={"acks": "all", "key_serializer": lambda tweet: tweet.to_json_bytes()},
            hint="keyed by the whole record, a tweet re-delivered with more likes gets another "
            "key, and so another partition. Key by the tweet_id alone.",
        ),
        Mistake(
            answer={"acks": "all", "key_serializer": lambda tweet: b"tweets"},
            hint="one key for every record puts the whole stream in one partition: order is "
            "kept, but nothing runs in parallel. Key by tweet_id: each tweet's deliveries "
            "stay together, and the tweets spread over the partitions.",
        ),
        Mistake(
            answer={"acks": "all", "key_serializer": lambda tweet: None},
            hint="a record without a key goes to a partition chosen at random. Return the "
            "tweet_id as bytes: tweet.tweet_id.encode().",
        ),
    ),
)
