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
* **Deterministic bytes** (offset order, fixed JSON layout, gzip at `GZIP_LEVEL` with
  ``mtime=0``): writing an object twice writes the same bytes, so "rewrite" can never mean
  "modify".
* **The raw value, undecoded**: garbage from a foreign producer is archived too; the master
  dataset keeps what Kafka had, bytes that are not UTF-8 included (base64 in ``value_b64``).
* **Judged once, here**: right after each raw object, its staged copy is written
  (`lambda_demo.batch.staging`): the records judged by the contract, as rows ready for the
  warehouse's ``COPY``, and the quarantined ones. The loader streams it, after checking that
  it belongs to the raw object's very bytes (else it rebuilds it from them). A large run
  writes (and judges) its objects in `WRITERS` worker processes while this one reads Kafka;
  offsets are still committed in order, each after its object is written.

**The master dataset checks itself.** Trusting S3's high-water mark alone would turn a
recreated, truncated or expired topic into a silent, permanent gap. Before it appends to a
partition, `archive` checks that Kafka still continues the archive: the topic must reach the
archived end, hold the offsets after it, and have at the last archived offset the very record
the archive has there (a recreated topic does not). If not, it stops with `MasterDatasetGap`,
naming the gap and the choice to make. An object missing between two others is re-archived
from Kafka. Each object is written with the SHA-256 of its bytes (S3 user metadata), and the
loader verifies every object before loading it (`verified_lines`): a zero-byte, truncated,
corrupt or missing object is rebuilt from Kafka (`heal`) while Kafka still holds its range;
otherwise the batch stops, naming the object (`DamagedObject`).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import json
import logging
import os
import pickle
import re
import subprocess
import sys
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from json.encoder import encode_basestring as _json_string  # type: ignore[attr-defined]
from pathlib import Path
from typing import BinaryIO, NamedTuple

from botocore.client import BaseClient
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata
from tqdm import tqdm

from lambda_demo.batch import staging
from lambda_demo.clients import kafka_io, storage
from lambda_demo.contract import MAX_INGEST_MS, MIN_INGEST_MS, ingest_day
from lambda_demo.errors import LambdaDemoError
from lambda_demo.ingestion.clock import to_millis
from lambda_demo.settings import Settings, get_settings

logger = logging.getLogger(__name__)

GROUP_ID = "batch-archiver"
PREFIX = "tweets/"
MAX_RECORDS_PER_OBJECT = 50_000
WRITERS = 2
"""Worker processes that write (and judge) objects in a large run: this machine's cores."""
PARALLEL_FROM = 2 * MAX_RECORDS_PER_OBJECT
"""Records from which a run writes in worker processes: below it, starting them (a second
or so) costs more than they save."""
"""Caps an object at a few tens of MB in memory and lets the loader commit in steps."""
GZIP_LEVEL = 1
"""gzip's fastest level: its default (9) spent 39 µs per record, half the archive's time, for
objects a fifth smaller. Every object is written at this level, so rewriting one still writes
the same bytes."""
CHECKSUM_METADATA = "sha256"
"""The S3 user metadata key (``x-amz-meta-sha256``) of an object's SHA-256, written with it."""

_DAY_MS = 86_400_000
_KEY = re.compile(
    r"tweets/ingest_date=(\d{4}-\d{2}-\d{2})/partition=(\d+)/offsets-(\d{12})-(\d{12})\.jsonl\.gz"
)


class SimulatedCrash(LambdaDemoError):
    """Raised by ``archive(fail_after_write=True)`` right after the first upload.

    It stands for a process killed between ``put_object`` and the offset commit: the drill
    that shows why the next run trusts S3 rather than the committed offset.
    """


class MasterDatasetGap(LambdaDemoError):
    """Kafka no longer continues the archive: a recreated, truncated or expired topic."""


class DamagedObject(LambdaDemoError):
    """An archive object is damaged and Kafka no longer holds the records to rebuild it."""


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
    by_partition: dict[int, list[ArchivedObject]] = {}
    for obj in list_archived(settings, client=s3):
        by_partition.setdefault(obj.partition, []).append(obj)

    consumer = kafka_io.consumer(settings, group_id=GROUP_ID, client_id="lambda-demo-archiver")
    written = archived = 0
    try:
        partitions = _partitions(consumer, settings.topic)
        offsets = kafka_io.partition_offsets(settings, settings.topic, consumer=consumer)
        # S3 alone decides where to resume: trusting a committed offset beyond what the
        # bucket holds (a new or emptied bucket) would silently skip records.
        starts: dict[TopicPartition, int] = {}
        for tp in partitions:
            objects = by_partition.get(tp.partition, [])
            written += _fill_holes(settings, s3, consumer, tp, objects, offsets[tp.partition][0])
            starts[tp] = _continues(settings, s3, consumer, tp, objects, offsets[tp.partition])
        targets = {tp: offsets[tp.partition][1] for tp in partitions}
        total = sum(max(0, targets[tp] - starts[tp]) for tp in partitions)
        # The crash drill needs its crash right after the first upload: one writer, here.
        workers = WRITERS if total >= PARALLEL_FROM and not fail_after_write else 0
        with (
            tqdm(total=total, desc="archive", unit="rec", disable=not progress) as bar,
            _Writers(settings, s3, workers=workers) as writers,
        ):
            for tp in partitions:
                records = kafka_io.read_range(
                    settings, tp.topic, tp.partition, starts[tp], targets[tp], consumer=consumer
                )
                for chunk in _chunks(records, max_records=max_records_per_object):
                    writers.write(tp, [ArchiveRecord(*_fields(r)) for r in chunk])
                    for key, tp_done, end, count in writers.finished(keep=workers):
                        written += 1
                        archived += count
                        if fail_after_write:
                            raise SimulatedCrash(f"simulated crash after writing {key}")
                        consumer.commit({tp_done: OffsetAndMetadata(end + 1, "", -1)})
                        bar.update(count)
            for _key, tp_done, end, count in writers.finished(keep=0):
                written += 1
                archived += count
                consumer.commit({tp_done: OffsetAndMetadata(end + 1, "", -1)})
                bar.update(count)
    finally:
        consumer.close()
    logger.info("archived %d records in %d objects", archived, written)
    return ArchiveResult(objects_written=written, records_archived=archived)


class ArchiveRecord(NamedTuple):
    """What the archive keeps of a Kafka record (and a worker process is handed)."""

    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


def _fields(record: ConsumerRecord) -> tuple[int, int, int, bytes | None, bytes | None]:
    return record.partition, record.offset, record.timestamp, record.key, record.value


class _Writers:
    """Writes chunks (raw object + staged copy) in this process, or in ``workers`` worker
    processes while this one goes on reading Kafka: judging the records is CPU work, and
    it parallelises across objects. `finished` yields written chunks in the order they
    were handed over, so offsets are committed in order.

    A worker is a plain ``python -c`` that imports only this module and reads chunks from a
    pipe (``multiprocessing``'s spawn would import the caller's main module too, and refuse
    a script without an ``if __name__ == "__main__"`` guard).
    """

    def __init__(self, settings: Settings, s3: BaseClient, *, workers: int) -> None:
        self.settings = settings
        self.s3 = s3
        package_root = str(Path(__file__).resolve().parents[2])
        python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        self.workers = [
            subprocess.Popen(
                [sys.executable, "-c", _WRITER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": python_path},
            )
            for _ in range(workers)
        ]
        self.turn = 0
        # (worker index, or the key already written here), partition, last offset, records
        self.pending: deque[tuple[int | str, TopicPartition, int, int]] = deque()

    def write(self, tp: TopicPartition, chunk: list[ArchiveRecord]) -> None:
        if not self.workers:
            key = _put(self.s3, self.settings, chunk)
            self.pending.append((key, tp, chunk[-1].offset, len(chunk)))
            return
        index, self.turn = self.turn, (self.turn + 1) % len(self.workers)
        pipe = self.workers[index].stdin
        assert pipe is not None
        try:
            pickle.dump((self.settings, chunk), pipe, protocol=pickle.HIGHEST_PROTOCOL)
            pipe.flush()
        except BrokenPipeError:
            self._stopped(index)
        self.pending.append((index, tp, chunk[-1].offset, len(chunk)))

    def finished(self, *, keep: int) -> Iterator[tuple[str, TopicPartition, int, int]]:
        """(key, partition, last offset, records) of written chunks, oldest first, until at
        most ``keep`` are still being written (a bound on the chunks held in memory)."""
        while len(self.pending) > keep:
            done, tp, end, count = self.pending.popleft()
            if isinstance(done, int):
                pipe = self.workers[done].stdout
                assert pipe is not None
                try:
                    done = pickle.load(pipe)
                except EOFError:
                    self._stopped(done)
                if isinstance(done, BaseException):
                    raise done
            yield str(done), tp, end, count

    def _stopped(self, index: int) -> None:
        code = self.workers[index].wait()
        raise LambdaDemoError(
            f"An archive writer process stopped (exit code {code}). Run the batch again: it "
            "resumes from what S3 holds."
        )

    def __enter__(self) -> _Writers:
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self.workers:
            if worker.stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    worker.stdin.close()  # end of input: the worker exits
            if exc[0] is not None:
                worker.kill()  # stop at once: whatever it was writing is rewritten next run
            worker.wait()
            if worker.stdout is not None:
                worker.stdout.close()


_WRITER = (
    "import sys; from lambda_demo.batch.archiver import _write_from; "
    "_write_from(sys.stdin.buffer, sys.stdout.buffer)"
)


def _write_from(source: BinaryIO, sink: BinaryIO) -> None:
    """A writer process: for each chunk read from ``source``, its key (or the exception)."""
    s3: BaseClient | None = None
    while True:
        try:
            settings, chunk = pickle.load(source)
        except EOFError:
            return
        result: object
        try:
            s3 = s3 or storage.s3_client(settings)
            result = _put(s3, settings, chunk)
        except Exception as exc:  # handed to the reader, which raises it
            result = picklable(exc)
        pickle.dump(result, sink)
        sink.flush()


def picklable(exc: Exception) -> Exception:
    """``exc``, or a `LambdaDemoError` with its words when it cannot cross a pipe."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return LambdaDemoError(f"{type(exc).__name__}: {exc}")
    return exc


def _fill_holes(
    settings: Settings,
    s3: BaseClient,
    consumer: KafkaConsumer,
    tp: TopicPartition,
    objects: list[ArchivedObject],
    kafka_begin: int,
) -> int:
    """Re-archive from Kafka every offset range missing between two archived objects (or
    before the first one, if Kafka still holds it); returns the objects written."""
    written = 0
    expected = min(kafka_begin, objects[0].start) if objects else 0
    for obj in objects:
        if obj.start > expected:
            logger.warning(
                "offsets %d-%d of partition %d are missing from the archive: re-archiving",
                expected,
                obj.start - 1,
                tp.partition,
            )
            written += _rearchive(settings, s3, consumer, tp, expected, obj.start, what=obj.key)
        expected = max(expected, obj.end + 1)
    return written


def _continues(
    settings: Settings,
    s3: BaseClient,
    consumer: KafkaConsumer,
    tp: TopicPartition,
    objects: list[ArchivedObject],
    kafka_range: tuple[int, int],
) -> int:
    """Where this partition's archive resumes, once Kafka is known to continue it."""
    begin, end = kafka_range
    archived_to = objects[-1].end + 1 if objects else 0
    where = f"topic {tp.topic!r}, partition {tp.partition}"
    choice = (
        "To keep the archive as it is and start a new one for this topic, point "
        "LAMBDA_DEMO_S3_BUCKET (and LAMBDA_DEMO_WAREHOUSE_SCHEMA) at new names; nothing was "
        "archived."
    )
    if end < archived_to:
        raise MasterDatasetGap(
            f"{where} ends at offset {end}, but the archive already holds offsets up to "
            f"{archived_to - 1}: the topic was deleted and recreated, or truncated. {choice}"
        )
    if begin > archived_to:
        raise MasterDatasetGap(
            f"{where}: offsets {archived_to}-{begin - 1} are no longer in Kafka (expired by "
            f"retention or deleted) and were never archived: those records are lost. {choice}"
        )
    if objects:
        last = objects[-1]
        kafka_record = next(
            iter(
                kafka_io.read_range(
                    settings, tp.topic, tp.partition, last.end, last.end + 1, consumer=consumer
                )
            ),
            None,
        )
        archived_line = _last_line(s3, settings.s3_bucket, last)
        if archived_line is not None and (
            kafka_record is None or encode_line(kafka_record) != archived_line
        ):
            raise MasterDatasetGap(
                f"{where}: the record at offset {last.end} is not the one archived in "
                f"{last.key}: the topic was deleted and recreated (or rewritten) since the "
                f"last run, so offsets {archived_to}-{end - 1} belong to another topic. "
                f"{choice}"
            )
    return archived_to


def _last_line(s3: BaseClient, bucket: str, obj: ArchivedObject) -> bytes | None:
    """The last archive line of ``obj`` (None if the object is damaged: the loader heals it)."""
    try:
        response = s3.get_object(Bucket=bucket, Key=obj.key)
        data = verified_lines(obj, response["Body"].read(), response.get("Metadata", {}))
    except (DamagedObject, s3.exceptions.NoSuchKey):
        return None
    return data[data.rstrip(b"\n").rfind(b"\n") + 1 :]


def verified_lines(obj: ArchivedObject, body: bytes, metadata: dict[str, str]) -> bytes:
    """The decompressed lines of ``obj``, or `DamagedObject` saying what is wrong with it.

    Three checks: the SHA-256 written with the object (when the S3 server kept it), gzip's
    own CRC and length (a truncated or flipped byte), and the offsets of its first and last
    line against its name (a whole, valid object put under the wrong key).
    """
    if not body:
        raise DamagedObject(f"{obj.key} is empty (zero bytes)")
    expected = metadata.get(CHECKSUM_METADATA)
    if expected is not None and hashlib.sha256(body).hexdigest() != expected:
        raise DamagedObject(f"{obj.key} is not what was written (its SHA-256 differs)")
    try:
        data = gzip.decompress(body)
    except (OSError, EOFError, zlib.error) as exc:
        raise DamagedObject(f"{obj.key} is truncated or corrupt ({exc})") from exc
    lines = data.rstrip(b"\n").split(b"\n")
    try:
        first, last = json.loads(lines[0])["offset"], json.loads(lines[-1])["offset"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DamagedObject(f"{obj.key} does not hold archive lines ({exc})") from exc
    if (first, last) != (obj.start, obj.end):
        raise DamagedObject(
            f"{obj.key} holds offsets {first}-{last}, not the {obj.start}-{obj.end} its name says"
        )
    return data


def heal(settings: Settings, s3: BaseClient, obj: ArchivedObject, problem: str) -> bytes:
    """Rebuild a damaged object from Kafka and return its lines, or stop naming it."""
    logger.warning("%s: re-archiving it from Kafka", problem)
    consumer = kafka_io.consumer(settings, client_id="lambda-demo-archiver-heal")
    tp = TopicPartition(settings.topic, obj.partition)
    try:
        _rearchive(settings, s3, consumer, tp, obj.start, obj.end + 1, what=obj.key)
    finally:
        consumer.close()
    response = s3.get_object(Bucket=settings.s3_bucket, Key=obj.key)
    return verified_lines(obj, response["Body"].read(), response.get("Metadata", {}))


def _rearchive(
    settings: Settings,
    s3: BaseClient,
    consumer: KafkaConsumer,
    tp: TopicPartition,
    start: int,
    end: int,
    *,
    what: str,
) -> int:
    """Archive offsets ``[start, end)`` again, exactly as the first time (same keys, same
    bytes), or raise `DamagedObject` if Kafka no longer holds all of them."""
    begin = kafka_io.partition_offsets(settings, tp.topic, consumer=consumer)[tp.partition][0]
    if begin > start:
        raise DamagedObject(
            f"s3://{settings.s3_bucket}/{what} is damaged or missing, and Kafka no longer holds "
            f"offsets {start}-{end - 1} of partition {tp.partition} to rebuild it. Restore it "
            "from a backup of the bucket; the batch run stopped before loading it."
        )
    records = kafka_io.read_range(settings, tp.topic, tp.partition, start, end, consumer=consumer)
    return sum(
        1
        for chunk in _chunks(records, max_records=MAX_RECORDS_PER_OBJECT)
        if _put(s3, settings, [ArchiveRecord(*_fields(r)) for r in chunk])
    )


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
    day_start = day_end = 0  # the chunk's day, in clamped epoch milliseconds: [start, end)
    for record in records:
        stamp = min(max(record.timestamp, MIN_INGEST_MS), MAX_INGEST_MS)
        if chunk and (len(chunk) >= max_records or not day_start <= stamp < day_end):
            yield chunk
            chunk = []
        if not chunk:
            day_start = to_millis(datetime.combine(_ingest_date(record), time(), UTC))
            day_end = day_start + _DAY_MS
        chunk.append(record)
    if chunk:
        yield chunk


def _ingest_date(record: ConsumerRecord | ArchiveRecord) -> date:
    """The record's UTC ingest day; a timestamp no tweet can have files under the nearest
    day a tweet can (the loader quarantines it): the master dataset still keeps it."""
    return ingest_day(min(max(record.timestamp, MIN_INGEST_MS), MAX_INGEST_MS))


def _put(s3: BaseClient, settings: Settings, chunk: list[ArchiveRecord]) -> str:
    """Write one raw object, then its staged copy (`staging`): judged once, here."""
    first = chunk[0]
    key = object_key(
        ingest_date=_ingest_date(first),
        partition=first.partition,
        start=first.offset,
        end=chunk[-1].offset,
    )
    body = gzip.compress(
        b"".join([encode_line(record) for record in chunk]), compresslevel=GZIP_LEVEL, mtime=0
    )
    checksum = hashlib.sha256(body).hexdigest()
    s3.put_object(
        Bucket=settings.s3_bucket, Key=key, Body=body, Metadata={CHECKSUM_METADATA: checksum}
    )
    staged = staging.build(
        ((r.partition, r.offset, r.timestamp, r.value) for r in chunk),
        raw_key=key,
        raw_sha256=checksum,
        dialect=settings.warehouse_dialect,
    )
    put_staged(s3, settings.s3_bucket, staged)
    logger.debug("wrote s3://%s/%s (%d records)", settings.s3_bucket, key, len(chunk))
    return key


def put_staged(s3: BaseClient, bucket: str, staged: staging.Staged) -> None:
    """The rows first, the manifest last: a manifest is only ever beside its rows."""
    s3.put_object(Bucket=bucket, Key=staged.rows_key, Body=staged.rows_body)
    key = staging.manifest_key(str(staged.manifest["source"]))
    s3.put_object(Bucket=bucket, Key=key, Body=staged.manifest_bytes())


def encode_line(record: ConsumerRecord | ArchiveRecord) -> bytes:
    """One JSON line; ``ensure_ascii=False`` keeps text readable, JSON escapes its newlines.

    Written as ``json.dumps(..., ensure_ascii=False, separators=(",", ":"))`` writes it, with
    the keys in this order, but without building a dict per record: the archive's bytes are
    what `_continues` compares Kafka's records against.
    """
    return (
        f'{{"partition":{record.partition},"offset":{record.offset},'
        f'"timestamp_ms":{record.timestamp},{_field("key", record.key)},'
        f"{_field('value', record.value)}}}\n"
    ).encode()


def _field(name: str, raw: bytes | None) -> str:
    """``"name":"text"``, ``"name_b64":"..."`` for bytes that are not UTF-8, or null."""
    if raw is None:
        return f'"{name}":null'
    try:
        return f'"{name}":{_json_string(raw.decode("utf-8"))}'
    except UnicodeDecodeError:
        return f'"{name}_b64":"{base64.b64encode(raw).decode("ascii")}"'


def decode_bytes(line: dict[str, object], name: str) -> bytes | None:
    """The original bytes of field ``name`` of an archive line (None for a Kafka null)."""
    encoded = line.get(f"{name}_b64")
    if isinstance(encoded, str):
        return base64.b64decode(encoded)
    text = line.get(name)
    return text.encode("utf-8") if isinstance(text, str) else None
