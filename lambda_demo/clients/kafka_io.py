"""Kafka clients configured from settings: admin, producer and consumer factories.

Every layer gets its clients here, so the addresses (embedded, docker or a real cluster) are
decided in one place.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from lambda_demo.settings import Settings, get_settings

logger = logging.getLogger(__name__)

# Topic configs: the tweets topic is the stream of record for the speed layer and `check`,
# so nothing expires; simulated replays carry timestamps far from the wall clock.
TOPIC_CONFIGS = {
    "retention.ms": "-1",
    "message.timestamp.type": "CreateTime",
}


# The largest record we produce; the embedded broker accepts 16 MB (message.max.bytes).
MAX_RECORD_BYTES = 8 * 1024 * 1024


def bootstrap(settings: Settings | None = None) -> str:
    return (settings or get_settings()).endpoints().kafka_bootstrap


def admin(settings: Settings | None = None) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap(settings), client_id="lambda-demo-admin")


def ensure_topics(settings: Settings | None = None) -> None:
    """Create ``tweets`` and ``tweets.dlq`` if they do not exist yet."""
    settings = settings or get_settings()
    topics = [
        NewTopic(settings.topic, settings.partitions, 1, topic_configs=TOPIC_CONFIGS),
        NewTopic(settings.dlq_topic, 1, 1, topic_configs=TOPIC_CONFIGS),
    ]
    client = admin(settings)
    with contextlib.closing(client):
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
