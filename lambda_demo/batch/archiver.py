"""Kafka -> S3: append the topic to the master dataset, each offset range exactly once.

The master dataset is the Lambda Architecture's source of truth: raw, immutable, append-only.
Kafka keeps the topic forever here, but a real cluster expires old segments, so the batch
layer copies every record to cheap object storage before it can disappear.

Why the objects look the way they do:

* **Named by offset range** (``offsets-{start}-{end}``, both inclusive): the name says exactly
  which records an object holds, so the next run resumes at ``1 + highest end`` found in S3.
  S3 is the truth; the consumer group's committed offset is only a progress marker that
  ``kafka-consumer-groups`` can display. A crash between the upload and the commit therefore
  loses nothing and duplicates nothing: the re-run trusts S3 and starts after the object.
* **One ingest date per object** (and at most 50,000 records), under ``ingest_date=...``: the
  batch view cuts at a day boundary, and a day's objects are one prefix to list or delete in
  a lifecycle rule.
* **Deterministic bytes** (offset order, fixed JSON layout, gzip with ``mtime=0``): writing an
  object twice writes the same bytes, so "rewrite" can never mean "modify".
* **The raw value, undecoded**: garbage from a foreign producer is archived too. Judging it is
  the loader's job; the master dataset keeps what Kafka had, bytes that are not UTF-8
  included (base64 in ``value_b64``).
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date

from botocore.client import BaseClient
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata
from tqdm import tqdm

from lambda_demo.clients import kafka_io, storage
from lambda_demo.contract import MAX_INGEST_MS, MIN_INGEST_MS, ingest_day
from lambda_demo.errors import LambdaDemoError
from lambda_demo.settings import Settings, get_settings

logger = logging.getLogger(__name__)

GROUP_ID = "batch-archiver"
PREFIX = "tweets/"
MAX_RECORDS_PER_OBJECT = 50_000
"""Caps an object at a few tens of MB in memory and lets the loader commit in steps."""

_KEY = re.compile(
    r"tweets/ingest_date=(\d{4}-\d{2}-\d{2})/partition=(\d+)/offsets-(\d{12})-(\d{12})\.jsonl\.gz"
)


class SimulatedCrash(LambdaDemoError):
    """Raised by ``archive(fail_after_write=True)`` right after the first upload.

    It stands for a process killed between ``put_object`` and the offset commit: the drill
    that shows why the next run trusts S3 rather than the committed offset.
    """


@dataclass(frozen=True)
class ArchivedObject:
    """One object of the master dataset, as described by its key."""

    key: str
    ingest_date: date
    partition: int
    start: int
    end: int


@dataclass(frozen=True)
class ArchiveResult:
    objects_written: int
    records_archived: int


def object_key(*, ingest_date: date, partition: int, start: int, end: int) -> str:
    """The key of the object holding offsets ``start..end`` (inclusive) of one partition."""
    return (
        f"{PREFIX}ingest_date={ingest_date.isoformat()}/partition={partition}/"
        f"offsets-{start:012d}-{end:012d}.jsonl.gz"
    )


def parse_object_key(key: str) -> ArchivedObject | None:
    """The inverse of `object_key`; None for a key this archiver did not write."""
    match = _KEY.fullmatch(key)
    if match is None:
        return None
    day, partition, start, end = match.groups()
    return ArchivedObject(key, date.fromisoformat(day), int(partition), int(start), int(end))


def list_archived(settings: Settings, *, client: BaseClient) -> list[ArchivedObject]:
    """Every archive object in the bucket, in key order (date, partition, offsets)."""
    found: list[ArchivedObject] = []
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=settings.s3_bucket, Prefix=PREFIX
    )
    for page in pages:
        for item in page.get("Contents", []):
            if item["Key"].endswith("/"):
                continue  # a "directory" marker, as file-system-backed S3 servers list them
            parsed = parse_object_key(item["Key"])
            if parsed is None:
                logger.warning(
                    "ignoring s3://%s/%s: not an archive key", settings.s3_bucket, item["Key"]
                )
                continue
            found.append(parsed)
    return sorted(found, key=lambda obj: obj.key)


def archive(
    settings: Settings | None = None,
    *,
    progress: bool = True,
    fail_after_write: bool = False,
    max_records_per_object: int = MAX_RECORDS_PER_OBJECT,
) -> ArchiveResult:
    """Copy every record from the last archived offset up to the end offsets seen at start.

    The target is fixed at start so a busy topic cannot keep one run going forever; what
    arrives meanwhile is the next run's work.
    """
    settings = settings or get_settings()
    s3 = storage.s3_client(settings)
    archived_up_to: dict[int, int] = {}
    for obj in list_archived(settings, client=s3):
        archived_up_to[obj.partition] = max(archived_up_to.get(obj.partition, 0), obj.end + 1)

    consumer = kafka_io.consumer(settings, group_id=GROUP_ID, client_id="lambda-demo-archiver")
    written = archived = 0
    try:
        partitions = _partitions(consumer, settings.topic)
        targets = consumer.end_offsets(partitions)
        # S3 alone decides where to resume: trusting a committed offset beyond what the
        # bucket holds (a new or emptied bucket) would silently skip records.
        starts = {tp: archived_up_to.get(tp.partition, 0) for tp in partitions}
        total = sum(max(0, targets[tp] - starts[tp]) for tp in partitions)
        with tqdm(total=total, desc="archive", unit="rec", disable=not progress) as bar:
            for tp in partitions:
                records = kafka_io.read_range(
                    settings, tp.topic, tp.partition, starts[tp], targets[tp], consumer=consumer
                )
                for chunk in _chunks(records, max_records=max_records_per_object):
                    key = _put(s3, settings.s3_bucket, chunk)
                    written += 1
                    archived += len(chunk)
                    if fail_after_write:
                        raise SimulatedCrash(f"simulated crash after writing {key}")
                    end = chunk[-1].offset
                    consumer.commit({tp: OffsetAndMetadata(end + 1, "", -1)})
                    bar.update(len(chunk))
    finally:
        consumer.close()
    logger.info("archived %d records in %d objects", archived, written)
    return ArchiveResult(objects_written=written, records_archived=archived)


def _partitions(consumer: KafkaConsumer, topic: str) -> list[TopicPartition]:
    ids = consumer.partitions_for_topic(topic)
    if not ids:
        raise LambdaDemoError(
            f"Topic {topic!r} does not exist: start the stack (`lambda-demo stack up`) "
            f"or check LAMBDA_DEMO_TOPIC."
        )
    return [TopicPartition(topic, p) for p in sorted(ids)]


def _chunks(
    records: Iterable[ConsumerRecord], *, max_records: int
) -> Iterator[list[ConsumerRecord]]:
    """Runs of consecutive records with the same ingest date, at most ``max_records`` long."""
    chunk: list[ConsumerRecord] = []
    for record in records:
        if chunk and (len(chunk) >= max_records or _ingest_date(record) != _ingest_date(chunk[0])):
            yield chunk
            chunk = []
        chunk.append(record)
    if chunk:
        yield chunk


def _ingest_date(record: ConsumerRecord) -> date:
    """The record's UTC ingest day; a timestamp no tweet can have files under the nearest
    day a tweet can (the loader quarantines it): the master dataset still keeps it."""
    return ingest_day(min(max(record.timestamp, MIN_INGEST_MS), MAX_INGEST_MS))


def _put(s3: BaseClient, bucket: str, chunk: list[ConsumerRecord]) -> str:
    first = chunk[0]
    key = object_key(
        ingest_date=_ingest_date(first),
        partition=first.partition,
        start=first.offset,
        end=chunk[-1].offset,
    )
    body = b"".join(encode_line(record) for record in chunk)
    s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(body, mtime=0))
    logger.debug("wrote s3://%s/%s (%d records)", bucket, key, len(chunk))
    return key


def encode_line(record: ConsumerRecord) -> bytes:
    """One JSON line; ``ensure_ascii=False`` keeps text readable, JSON escapes its newlines."""
    line: dict[str, object] = {
        "partition": record.partition,
        "offset": record.offset,
        "timestamp_ms": record.timestamp,
    }
    line.update(_text_or_b64("key", record.key))
    line.update(_text_or_b64("value", record.value))
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def decode_bytes(line: dict[str, object], name: str) -> bytes | None:
    """The original bytes of field ``name`` of an archive line (None for a Kafka null)."""
    encoded = line.get(f"{name}_b64")
    if isinstance(encoded, str):
        return base64.b64decode(encoded)
    text = line.get(name)
    return text.encode("utf-8") if isinstance(text, str) else None


def _text_or_b64(name: str, raw: bytes | None) -> dict[str, object]:
    if raw is None:
        return {name: None}
    try:
        return {name: raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_b64": base64.b64encode(raw).decode("ascii")}
