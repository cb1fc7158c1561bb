"""Replay recorded tweets into Kafka as if they arrived live, on a simulated clock.

Every line goes through the same ``TweetHandler`` as the live stream. Each record carries two
headers, ``replay-source`` (which files, which start) and ``replay-line`` (its line number).

**Resuming.** An interrupted replay must not duplicate what Kafka already has. Because the
handler knows each record's partition before sending, and an idempotent producer keeps each
partition in order, the lines Kafka holds form a prefix *per partition*. On start we read the
last record of each partition of ``tweets`` and ``tweets.dlq`` that belongs to this replay and
skip every line at or below that partition's mark. The ingest clock is replayed too (it is
logical, see ``lambda_demo.ingestion.clock``), so resumed records get the timestamps they
would have had.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

from kafka import TopicPartition
from tqdm.auto import tqdm

from lambda_demo.clients import kafka_io
from lambda_demo.contract import due_time
from lambda_demo.ingestion.clock import SimulatedClock, to_millis
from lambda_demo.ingestion.handler import IngestCounts, TweetHandler
from lambda_demo.settings import REPO_ROOT, Settings, get_settings

logger = logging.getLogger(__name__)

SAMPLE_FILE = REPO_ROOT / "data" / "sample_tweets" / "tweets.jsonl.gz"
_SCAN_CHUNK = 2_000


def read_lines(path: Path) -> Iterator[bytes]:
    """Raw lines (newline stripped), from plain or gzipped JSONL."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        for line in handle:
            yield line.rstrip(b"\r\n")


def source_id(files: list[Path], start: datetime | None, loop_round: int = 0) -> str:
    """A short, stable name for one replay: same content and start -> same id -> resumable.

    The files' bytes, not their names: two different files called ``tweets.jsonl.gz`` are two
    sources, and the second must not be skipped as if Kafka already had it.
    """
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    digest.update(f"|{start.isoformat() if start else ''}|{loop_round}".encode())
    return digest.hexdigest()[:16]


def delivered_marks(settings: Settings, source: str) -> dict[tuple[str, int], int]:
    """For each (topic, partition), the highest line of ``source`` that Kafka already holds."""
    consumer = kafka_io.consumer(settings, consumer_timeout_ms=2000)
    marks: dict[tuple[str, int], int] = {}
    with contextlib.closing(consumer):
        for topic in (settings.topic, settings.dlq_topic):
            partitions = consumer.partitions_for_topic(topic) or set()
            for number in partitions:
                tp = TopicPartition(topic, number)
                mark = _last_line_in(consumer, tp, source.encode())
                if mark is not None:
                    marks[(topic, number)] = mark
    return marks


def _last_line_in(consumer, tp: TopicPartition, source: bytes) -> int | None:
    """Scan a partition backwards, a chunk at a time, for this source's last record."""
    consumer.assign([tp])
    begin = consumer.beginning_offsets([tp])[tp]
    end = consumer.end_offsets([tp])[tp]
    stop = end
    while stop > begin:
        first = max(begin, stop - _SCAN_CHUNK)
        consumer.seek(tp, first)
        best = None
        position = first
        while position < stop:
            batch = consumer.poll(timeout_ms=1000, max_records=_SCAN_CHUNK)
            records = batch.get(tp, [])
            if not records:
                break
            for record in records:
                position = record.offset + 1
                if record.offset >= stop:
                    break
                headers = dict(record.headers or [])
                if headers.get("replay-source") == source:
                    best = int(headers["replay-line"])
        if best is not None:
            return best
        stop = first
    return None


def _span_days(files: list[Path]) -> timedelta:
    """Whole days covered by the files: each ``--loop`` round is shifted by this much."""
    dues = [d for path in files for line in read_lines(path) if (d := due_time(line))]
    return timedelta(days=(max(dues) - min(dues)).days + 1) if dues else timedelta(days=1)


def relabel(raw: bytes, *, shift: timedelta) -> bytes:
    """A later copy of a recorded tweet for ``--loop``: created_at and id moved by ``shift``.

    Ids are snowflakes (milliseconds << 22), so moving the id by ``shift_ms << 22`` keeps it
    consistent with its new timestamp and unique across rounds. Lines that are not a tweet
    object pass unchanged (they are dead-lettered again, as they would be live).
    """
    try:
        record = json.loads(raw)
        data = record["data"]
        moved = datetime.fromisoformat(data["created_at"].replace("Z", "+00:00")) + shift
        new_id = str(int(data["id"]) + ((shift // timedelta(milliseconds=1)) << 22))
    except (ValueError, KeyError, TypeError, AttributeError):
        return raw
    data["created_at"] = moved.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moved.microsecond // 1000:03d}Z"
    data["id"] = new_id
    data["edit_history_tweet_ids"] = [new_id]
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


def replay(
    files: list[Path] | None = None,
    *,
    settings: Settings | None = None,
    speedup: float = 0.0,
    start: datetime | None = None,
    loop: bool = False,
    progress: bool = True,
    clock: SimulatedClock | None = None,
) -> IngestCounts:
    """Play sample files into Kafka; returns what was read, produced and dead-lettered.

    Pass a ``clock`` to watch the simulated time from another thread (``demo`` does).
    """
    settings = settings or get_settings()
    clock = clock or SimulatedClock(speedup=speedup)
    files = files or [SAMPLE_FILE]
    kafka_io.ensure_topics(settings)
    producer = kafka_io.producer(settings)
    handler = TweetHandler.for_settings(producer, settings)
    loop_round = 0
    try:
        while True:
            _replay_round(handler, settings, files, clock, start, loop_round, progress)
            if not loop:
                break
            loop_round += 1
    finally:
        handler.flush()
        producer.close()
    return handler.counts


def _replay_round(
    handler: TweetHandler,
    settings: Settings,
    files: list[Path],
    clock: SimulatedClock,
    start: datetime | None,
    loop_round: int,
    progress: bool,
) -> None:
    source = source_id(files, start, loop_round)
    marks = delivered_marks(settings, source)
    if marks:
        logger.info("resuming replay %s after %s", source, marks)
    shift = None
    # Counting lines means reading the files twice: only worth it for a progress bar.
    total = sum(1 for path in files for _ in read_lines(path)) if progress else None
    lines = (line for path in files for line in read_lines(path))
    if loop_round:
        span = _span_days(files)
        lines = (relabel(line, shift=loop_round * span) for line in lines)
    bar = tqdm(total=total, unit="line", desc="replay", disable=not progress, mininterval=0.5)
    skipped = 0
    with bar:
        for number, raw in enumerate(lines):
            bar.update(1)
            routed = handler.route(raw)
            due = due_time(raw, routed[3] if routed else None)
            if due is not None and shift is None:
                shift = (start - due) if start else timedelta(0)
            already_sent = routed is not None and number <= marks.get(routed[:2], -1)
            ingest = clock.tick(
                due + shift if due and shift is not None else None, pace=not already_sent
            )
            if routed is None:
                continue
            if already_sent:
                skipped += 1
                continue
            handler.handle(
                raw,
                ingest_ms=to_millis(ingest),
                headers=[("replay-source", source.encode()), ("replay-line", str(number).encode())],
                routed=routed,
            )
    if skipped:
        logger.info("skipped %d lines Kafka already had", skipped)
    handler.flush()
