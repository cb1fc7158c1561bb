"""The one handler both sources feed: validate, normalise, produce to Kafka or dead-letter.

``replay`` (recorded tweets) and ``live`` (tweepy's StreamingClient) hand every raw payload to
``TweetHandler.handle`` with its ingest time. Valid tweets go to ``tweets`` as flat JSON
keyed by tweet id (so every delivery of a tweet lands in the same partition, in order);
anything else goes to ``tweets.dlq`` with the original bytes and the reason in headers.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import NamedTuple

from kafka import KafkaProducer
from kafka.partitioner.default import murmur2

from lambda_demo.clients.kafka_io import MAX_RECORD_BYTES
from lambda_demo.contract import FlatTweet, Rejected, ingest_time_rejection, parse_api_tweet
from lambda_demo.settings import Settings

# What the DLQ keeps of a line too large for Kafka: enough to see what it was.
TRUNCATE_BYTES = 64 * 1024

logger = logging.getLogger(__name__)


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2, as in the Java client), computed up front.

    Knowing the partition before sending lets an interrupted replay find, per partition,
    the last line Kafka already has (see ``lambda_demo.ingestion.replay``).
    """
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class Prepared(NamedTuple):
    """A judged payload in plain values, ready to send (and cheap to hand from a parsing
    process to the sending one): a dead letter has a ``reason`` and no ``value`` (its raw
    bytes are sent), a tweet its flat record as ``value``."""

    partition: int
    key: bytes | None
    value: bytes | None
    reason: str | None = None
    detail: str | None = None


def judge(raw: bytes, partitions: int) -> tuple[int, bytes | None, FlatTweet | Rejected] | None:
    """(partition, key, verdict) of one payload; None for a blank line (a keep-alive).

    A rejected payload goes to the dead-letter topic's partition 0, without a key.
    """
    if len(raw) > MAX_RECORD_BYTES:
        # Too big for Kafka as it is; dead-lettered with its head only (see ``send``).
        return 0, None, Rejected("too_large", f"{len(raw)} bytes")
    parsed = parse_api_tweet(raw)
    if parsed is None:
        return None
    if isinstance(parsed, Rejected):
        return 0, None, parsed
    key = parsed.tweet_id.encode()
    return partition_for(key, partitions), key, parsed


def prepare(partition: int, key: bytes | None, verdict: FlatTweet | Rejected) -> Prepared:
    """What `TweetHandler.send` needs of a judged payload."""
    if isinstance(verdict, Rejected):
        return Prepared(partition, key, None, verdict.reason, verdict.detail)
    return Prepared(partition, key, verdict.to_json_bytes())


@dataclass
class IngestCounts:
    """What a source did: lines read, tweets produced, records dead-lettered, sends failed."""

    read: int = 0
    produced: int = 0
    dead_lettered: int = 0
    failed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def as_dict(self) -> dict[str, int]:
        return {"read": self.read, "produced": self.produced, "dead_lettered": self.dead_lettered}

    def _failed(self, exc: BaseException) -> None:
        # Delivery callbacks run on the producer's I/O thread.
        with self._lock:
            self.failed += 1
        logger.error("delivery failed: %s", exc)


class TweetHandler:
    """Turns one raw payload into one Kafka record on the right topic."""

    def __init__(
        self, producer: KafkaProducer, *, topic: str, dlq_topic: str, partitions: int
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.partitions = partitions
        self.counts = IngestCounts()

    @classmethod
    def for_settings(cls, producer: KafkaProducer, settings: Settings) -> TweetHandler:
        """The handler for the topics and partition count in ``settings``."""
        return cls(
            producer,
            topic=settings.topic,
            dlq_topic=settings.dlq_topic,
            partitions=settings.partitions,
        )

    def route(self, raw: bytes) -> tuple[str, int, bytes | None, FlatTweet | Rejected] | None:
        """Where a payload goes: (topic, partition, key, parsed), or None for a blank line."""
        judged = judge(raw, self.partitions)
        if judged is None:
            return None
        partition, key, parsed = judged
        topic = self.dlq_topic if isinstance(parsed, Rejected) else self.topic
        return topic, partition, key, parsed

    def handle(
        self,
        raw: bytes,
        *,
        ingest_ms: int,
        headers: list[tuple[str, bytes]] | None = None,
        routed: tuple[str, int, bytes | None, FlatTweet | Rejected] | None = None,
    ) -> None:
        """Validate and send one payload (asynchronously; ``flush`` waits for the acks)."""
        routed = routed or self.route(raw)
        if routed is None:
            return
        _, partition, key, parsed = routed
        self.send(raw, prepare(partition, key, parsed), ingest_ms=ingest_ms, headers=headers)

    def send(
        self,
        raw: bytes,
        prepared: Prepared,
        *,
        ingest_ms: int,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Send one judged payload to its topic (asynchronously; ``flush`` waits for the acks)."""
        partition, key, value, reason, detail = prepared
        if reason is None:
            refused = ingest_time_rejection(ingest_ms)
            if refused is not None:
                # A replayed tweet dated before the first tweet: every layer would quarantine it.
                partition, key, value, reason, detail = (
                    0,
                    None,
                    None,
                    refused.reason,
                    refused.detail,
                )
        counts = self.counts
        counts.read += 1
        headers = list(headers or [])
        if reason is not None:
            topic = self.dlq_topic
            value = raw[:TRUNCATE_BYTES] if len(raw) > MAX_RECORD_BYTES else raw
            headers += [("reason", reason.encode()), ("detail", (detail or "").encode())]
            counts.dead_lettered += 1
            counts.reasons[reason] = counts.reasons.get(reason, 0) + 1
        else:
            topic = self.topic
            counts.produced += 1
        future = self.producer.send(
            topic,
            value=value,
            key=key,
            partition=partition,
            timestamp_ms=ingest_ms,
            headers=headers,
        )
        future.add_errback(counts._failed)

    def flush(self) -> None:
        self.producer.flush()
