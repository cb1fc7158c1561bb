"""Kafka clients configured from settings, and the one way to read a range of a partition.

Every layer gets its clients here, so the addresses (embedded, docker or a real cluster) are
decided in one place. Every layer that reads records by offset (the archiver, ``check``, the
pipeline clock, the replay's resume, the notebooks' peek) reads them with `read_range`,
under its one timeout policy, and asks for a topic's offsets with `partition_offsets`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from lambda_demo.errors import LambdaDemoError
from lambda_demo.settings import Settings, get_settings

logger = logging.getLogger(__name__)

# Topic configs: the tweets topic is the stream of record for the speed layer and `check`,
# so nothing expires; simulated replays carry timestamps far from the wall clock.
TOPIC_CONFIGS = {
    "retention.ms": "-1",
    "message.timestamp.type": "CreateTime",
}


REPLICATION_FACTOR = 3
"""Copies of each partition on a cluster (fewer if it has fewer brokers): one may be lost."""


def min_insync_replicas(replicas: int) -> int:
    """How many copies a write with ``acks=all`` needs: all but one, so one broker may be
    down while every acknowledged record is still on two brokers (one, on one broker)."""
    return max(1, replicas - 1)


# The largest record we produce; the embedded broker accepts 16 MB (message.max.bytes).
MAX_RECORD_BYTES = 8 * 1024 * 1024


def bootstrap(settings: Settings | None = None) -> str:
    """The bootstrap servers; raises ``KafkaConnectionError`` at once if every one refuses.

    kafka-python retries a refused bootstrap for 30 s (``bootstrap_timeout_ms``) and logs an
    ERROR per attempt; a stopped stack refuses at once, so say so at once. A server that is
    slow or unreachable (no refusal) is left to the client's own timeouts.
    """
    servers = (settings or get_settings()).kafka_servers()
    if not any(_may_answer(server) for server in servers.split(",")):
        raise KafkaConnectionError(f"every bootstrap server refused the connection: {servers}")
    return servers


def _may_answer(server: str, timeout_seconds: float = 2.0) -> bool:
    """False if ``host:port`` refuses connections or its host name does not resolve."""
    host, _, port = server.strip().rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout_seconds):
            return True
    except (ConnectionRefusedError, socket.gaierror):
        return False
    except (OSError, ValueError):
        return True  # a timeout or an odd address: the client's own handling applies


def admin(settings: Settings | None = None) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap(settings), client_id="lambda-demo-admin")


def ensure_topics(settings: Settings | None = None) -> None:
    """Create ``tweets`` and ``tweets.dlq`` if they do not exist yet.

    Each partition gets `REPLICATION_FACTOR` copies, or one per broker on a smaller cluster
    (the embedded stack's single broker), and `min_insync_replicas` of them.
    """
    settings = settings or get_settings()
    client = admin(settings)
    with contextlib.closing(client):
        replicas = min(REPLICATION_FACTOR, len(client.describe_cluster()["brokers"]))
        configs = TOPIC_CONFIGS | {"min.insync.replicas": str(min_insync_replicas(replicas))}
        topics = [
            NewTopic(settings.topic, settings.partitions, replicas, topic_configs=configs),
            NewTopic(settings.dlq_topic, 1, replicas, topic_configs=configs),
        ]
        existing = set(client.list_topics())
        for topic in topics:
            if topic.name in existing:
                continue
            with contextlib.suppress(TopicAlreadyExistsError):
                client.create_topics([topic])
                logger.info("created topic %s", topic.name)


def producer(settings: Settings | None = None, **overrides: Any) -> KafkaProducer:
    """A producer tuned the way a reader should tune one; see notebook 01 for each knob."""
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap(settings),
        "acks": "all",  # durable: the leader waits for the in-sync replicas
        "enable_idempotence": True,  # broker drops a retried batch it already has
        "linger_ms": 20,  # wait up to 20 ms to fill a batch: far fewer requests
        "batch_size": 256 * 1024,
        "compression_type": "gzip",
        "max_in_flight_requests_per_connection": 5,
        "max_request_size": MAX_RECORD_BYTES + 64 * 1024,
        "retries": 10,
    }
    config.update(overrides)
    return KafkaProducer(**config)


def consumer(settings: Settings | None = None, **overrides: Any) -> KafkaConsumer:
    """A consumer that never loses data by default: earliest offset, manual commits."""
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap(settings),
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
        "max_partition_fetch_bytes": 8 * 1024 * 1024,
    }
    config.update(overrides)
    return KafkaConsumer(**config)


READ_TIMEOUT_SECONDS = 60.0
"""`read_range`'s one timeout: how long a read may make no progress before it gives up."""

_POLL_MS = 1000
_POLL_RECORDS = 10_000


def partition_offsets(
    settings: Settings, topic: str, *, consumer: KafkaConsumer | None = None
) -> dict[int, tuple[int, int]]:
    """``{partition: (first offset, end offset)}`` of ``topic`` in partition order; empty if
    the topic does not exist. ``end - first`` records are in a partition."""
    own = consumer is None
    if consumer is None:
        consumer = _open_reader(settings, "lambda-demo-offsets")
    try:
        ids = consumer.partitions_for_topic(topic) or set()
        partitions = [TopicPartition(topic, p) for p in sorted(ids)]
        begins = consumer.beginning_offsets(partitions)
        ends = consumer.end_offsets(partitions)
    finally:
        if own:
            consumer.close()
    return {tp.partition: (begins[tp], ends[tp]) for tp in partitions}


def read_range(
    settings: Settings,
    topic: str,
    partition: int,
    start: int,
    end: int,
    *,
    consumer: KafkaConsumer | None = None,
    timeout_seconds: float = READ_TIMEOUT_SECONDS,
) -> Iterator[ConsumerRecord]:
    """The records at offsets ``[start, end)`` of one partition, in offset order.

    ``assign`` + ``seek`` rather than ``subscribe``: no consumer group rebalance can move the
    partition away mid-read, nobody's committed offsets change, and the read covers exactly
    the range asked for. An offset that holds no record (a transaction marker) is skipped:
    the read ends when the consumer's position reaches ``end``.

    Pass ``consumer`` to read with one already open (it is left open, assigned to this
    partition); else one is opened and closed here. The timeout policy: the read gives up
    with a `LambdaDemoError` that says where it stopped when its position has not moved for
    ``timeout_seconds`` - a deadline that each record read pushes back, so a long range is
    never cut short while Kafka keeps delivering.
    """
    if start >= end:
        return
    own = consumer is None
    if consumer is None:
        consumer = _open_reader(settings, "lambda-demo-reader")
    tp = TopicPartition(topic, partition)
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        position = start
        deadline = time.monotonic() + timeout_seconds
        while position < end:
            records = consumer.poll(timeout_ms=_POLL_MS, max_records=_POLL_RECORDS).get(tp, [])
            moved = consumer.position(tp)
            if moved > position:
                position = moved
                deadline = time.monotonic() + timeout_seconds
            elif time.monotonic() > deadline:
                raise LambdaDemoError(
                    f"Could not read offsets [{start}, {end}) of {topic}[{partition}]: no "
                    f"progress for {timeout_seconds:g} s at offset {position}. Is Kafka up? "
                    "(`lambda-demo stack status` says.)"
                )
            for record in records:
                if record.offset >= end:
                    return
                yield record
    finally:
        if own:
            consumer.close()


def _open_reader(settings: Settings, client_id: str) -> KafkaConsumer:
    """`consumer`, under a name the ``consumer`` parameters above do not hide."""
    return consumer(settings, client_id=client_id)
