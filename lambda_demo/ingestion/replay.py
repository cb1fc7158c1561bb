"""Replay recorded tweets into Kafka as if they arrived live, on a simulated clock.

Every line goes through the same ``TweetHandler`` as the live stream. Each record carries two
headers, ``replay-source`` (which files, which start) and ``replay-line`` (its line number).

**Resuming.** An interrupted replay must not duplicate what Kafka already has, nor skip what
it lacks. A replay is known by its files' *content* (`source_id`), and on start it reads
which of its lines ``tweets`` and ``tweets.dlq`` hold and sends exactly the others. Not "every
line after the last one delivered": a broker restart can make the producer give up on one
batch and deliver the next, so the delivered lines need not be a prefix. The ingest clock is
replayed too (it is logical, see ``lambda_demo.ingestion.clock``), so resumed records get the
timestamps they would have had.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm

from lambda_demo.batch.archiver import picklable
from lambda_demo.clients import kafka_io
from lambda_demo.contract import due_time
from lambda_demo.errors import LambdaDemoError
from lambda_demo.ingestion.clock import SimulatedClock, format_utc, to_millis
from lambda_demo.ingestion.handler import IngestCounts, Prepared, TweetHandler, judge, prepare
from lambda_demo.settings import REPO_ROOT, Settings, get_settings

logger = logging.getLogger(__name__)

SAMPLE_FILE = REPO_ROOT / "data" / "sample_tweets" / "tweets.jsonl.gz"


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


def delivered_lines(settings: Settings, source: str) -> set[int]:
    """Every line of ``source`` that Kafka holds, in ``tweets`` or ``tweets.dlq``.

    The set, not the highest line per partition: after a broker restart, the producer may
    give up on one batch (``failed`` counts it) and still deliver later ones, so what Kafka
    holds can have holes, and a resume that skipped up to a mark would skip them for good.
    """
    wanted = source.encode()
    lines: set[int] = set()
    consumer = kafka_io.consumer(settings, client_id="lambda-demo-replay-resume")
    with contextlib.closing(consumer):
        for topic in (settings.topic, settings.dlq_topic):
            offsets = kafka_io.partition_offsets(settings, topic, consumer=consumer)
            for number, (begin, end) in offsets.items():
                for record in kafka_io.read_range(
                    settings, topic, number, begin, end, consumer=consumer
                ):
                    headers = dict(record.headers or [])
                    if headers.get("replay-source") == wanted:
                        lines.add(int(headers["replay-line"]))
    return lines


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
        created_at = format_utc(moved)  # ValueError for a time without a zone: not a tweet
        new_id = str(int(data["id"]) + ((shift // timedelta(milliseconds=1)) << 22))
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
        return raw
    data["created_at"] = created_at
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
    # Flat out, parsing gets a process of its own, started first so that it is up while
    # this one reads which lines Kafka already has.
    in_worker = clock.speedup == 0 and sum(p.stat().st_size for p in files) >= WORKER_FROM_BYTES
    lines = (
        judged_in_worker(files, loop_round, handler.partitions)
        if in_worker
        else judged_lines(files, loop_round, handler.partitions)
    )
    source = source_id(files, start, loop_round)
    delivered = delivered_lines(settings, source)
    if delivered:
        logger.info("resuming replay %s: Kafka has %d of its lines", source, len(delivered))
    shift = None
    # Counting lines means reading the files twice: only worth it for a progress bar.
    total = sum(1 for path in files for _ in read_lines(path)) if progress else None
    bar = tqdm(total=total, unit="line", desc="replay", disable=not progress, mininterval=0.5)
    skipped = 0
    source_header = ("replay-source", source.encode())
    with bar, contextlib.closing(lines):
        for number, (raw, prepared, due) in enumerate(lines):
            bar.update(1)
            if due is not None and shift is None:
                shift = (start - due) if start else timedelta(0)
            already_sent = prepared is not None and number in delivered
            ingest = clock.tick(
                due + shift if due and shift is not None else None, pace=not already_sent
            )
            if prepared is None:
                continue
            if already_sent:
                skipped += 1
                continue
            handler.send(
                raw,
                prepared,
                ingest_ms=to_millis(ingest),
                headers=[source_header, ("replay-line", str(number).encode())],
            )
    if skipped:
        logger.info("skipped %d lines Kafka already had", skipped)
    handler.flush()


Judged = tuple[bytes, Prepared | None, datetime | None]
"""One line of a replay round: its bytes, how it is sent (None: a blank line), its due time."""

WORKER_FROM_BYTES = 2 * 2**20
"""Input size from which a flat-out replay parses in a worker process: starting one takes
about half a second, which a replay of some 20,000 lines (2 MiB gzipped) wins back."""
_BLOCK_LINES = 2_000  # lines per hand-over from the parsing process


def judged_lines(files: list[Path], loop_round: int, partitions: int) -> Iterator[Judged]:
    """Every line of one round, judged by the handler's rules (`handler.judge`), in order."""
    lines: Iterator[bytes] = (line for path in files for line in read_lines(path))
    if loop_round:
        span = _span_days(files)
        lines = (relabel(line, shift=loop_round * span) for line in lines)
    for raw in lines:
        judged = judge(raw, partitions)
        if judged is None:
            yield raw, None, due_time(raw)
        else:
            yield raw, prepare(*judged), due_time(raw, judged[2])


def judged_in_worker(files: list[Path], loop_round: int, partitions: int) -> Iterator[Judged]:
    """`judged_lines`, computed in a worker process while this one sends.

    Parsing and validating a line costs about as much as kafka-python's ``send``; in one
    process the two take turns on one core. The worker is a plain ``python -c`` that imports
    only this module (``multiprocessing``'s spawn would import the caller's main module too,
    which for the benchmarks means Spark); it writes blocks of judged lines as pickles to a
    pipe, whose buffer keeps it at most a few blocks ahead. It is stopped when the round ends,
    or when the sender stops early.
    """
    package_root = str(Path(__file__).resolve().parents[2])
    python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": python_path},
    )
    assert worker.stdin is not None and worker.stdout is not None
    try:
        pickle.dump((files, loop_round, partitions), worker.stdin)
        worker.stdin.close()
        while True:
            try:
                block = pickle.load(worker.stdout)
            except EOFError:
                raise LambdaDemoError(
                    f"The replay's parsing process stopped (exit code {worker.wait()}) before "
                    "the end of the files: run the replay again, it resumes."
                ) from None
            if block is None:
                return
            if isinstance(block, BaseException):
                raise block
            yield from block
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait()
        worker.stdout.close()


_WORKER = (
    "import sys; from lambda_demo.ingestion.replay import _judge_into; "
    "_judge_into(sys.stdin.buffer, sys.stdout.buffer)"
)


def _judge_into(source: BinaryIO, sink: BinaryIO) -> None:
    """The worker process: judged lines in blocks, then None (or the exception it hit)."""
    files, loop_round, partitions = pickle.load(source)
    try:
        block: list[Judged] = []
        for judged in judged_lines(files, loop_round, partitions):
            block.append(judged)
            if len(block) >= _BLOCK_LINES:
                pickle.dump(block, sink, protocol=pickle.HIGHEST_PROTOCOL)
                block = []
        pickle.dump(block, sink, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.dump(None, sink)
    except Exception as exc:  # handed to the sender, which raises it
        pickle.dump(picklable(exc), sink)
    sink.flush()
