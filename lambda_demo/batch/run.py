"""One batch run: archive, load, recompute, under a lock, with the cutoff day D decided first.

The cutoff D splits the serving view: the batch view covers ingest days before D, the speed
view days from D on. By default D is the day of the **pipeline clock**: the newest record's
timestamp in each partition, and of those the earliest, so that (as for the speed layer's
watermark) one record stamped far ahead in one partition cannot move it. Not the wall
clock: a replay of last year's tweets then cuts in last year, and a learner's laptop clock
cannot move records between the two views.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal

from kafka import KafkaConsumer

from lambda_demo.batch import archiver, loader, recompute
from lambda_demo.clients import kafka_io, warehouse
from lambda_demo.contract import ingest_day, ingest_day_of, ingest_time
from lambda_demo.errors import LambdaDemoError
from lambda_demo.ingestion.clock import wait_until
from lambda_demo.serving import reads
from lambda_demo.settings import Settings, get_settings

logger = logging.getLogger(__name__)

DEFAULT_LOCK_WAIT_SECONDS = 30.0
_LOCK_NAME = "lambda_demo.batch"


class BatchBusyError(LambdaDemoError):
    """Another batch run holds the lock on this warehouse schema."""


Step = Literal["archive", "load", "recompute"]
STEPS: tuple[Step, ...] = ("archive", "load", "recompute")


@dataclass(frozen=True)
class BatchSummary:
    """What one run did; a step it did not run (``--only``) counts zero and is not shown."""

    cutoff: date
    run_id: str | None
    objects_written: int = 0
    records_archived: int = 0
    objects_loaded: int = 0
    rows_loaded: int = 0
    quarantined: int = 0
    locations: int = 0
    tweets_in_view: int = 0
    steps: tuple[Step, ...] = STEPS

    def __str__(self) -> str:
        lines = {
            "archive": f"  archived   {self.records_archived} records into "
            f"{self.objects_written} new S3 objects",
            "load": f"  loaded     {self.objects_loaded} objects: {self.rows_loaded} rows, "
            f"{self.quarantined} quarantined",
            "recompute": f"  batch view {self.locations} locations, "
            f"{self.tweets_in_view} distinct tweets",
        }
        title = (
            f"batch run {self.run_id}: ingest days before {self.cutoff}"
            if self.run_id
            else f"batch steps {', '.join(self.steps)} (the batch view was not recomputed)"
        )
        return "\n".join([title, *(lines[step] for step in self.steps)])


def run_batch(
    settings: Settings | None = None,
    *,
    cutoff: date | None = None,
    progress: bool = True,
    lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS,
    only: Step | None = None,
) -> BatchSummary:
    """Archive Kafka to S3, load S3 into ``raw_tweets``, and recompute the batch view.

    ``cutoff`` defaults to `pipeline_day`, or the published cutoff if that is later (a cutoff
    never moves back: `recompute.CutoffMovedBack`, raised before any work for an explicit
    one). Raises `BatchBusyError` if another run still holds the lock after
    ``lock_wait_seconds``. ``only`` runs one of the three steps (notebook 02 walks them one
    at a time); the summary then counts that step's work only.
    """
    settings = settings or get_settings()
    warehouse.ensure_schema(settings)
    with batch_lock(settings, wait_seconds=lock_wait_seconds):
        published = reads.batch_cutoff(settings)
        current = date.fromisoformat(published) if published else None
        if cutoff is not None and current is not None and cutoff < current:
            raise recompute.CutoffMovedBack(recompute.moved_back_message(cutoff, current))
        day = cutoff or max(pipeline_day(settings), current or date.min)
        steps = STEPS if only is None else (only,)
        summary: dict[str, object] = {}
        if "archive" in steps:
            archived = archiver.archive(settings, progress=progress)
            summary.update(
                objects_written=archived.objects_written, records_archived=archived.records_archived
            )
        if "load" in steps:
            loaded = loader.load(settings, progress=progress)
            summary.update(
                objects_loaded=loaded.objects_loaded,
                rows_loaded=loaded.rows_loaded,
                quarantined=loaded.quarantined,
            )
        run_id = None
        if "recompute" in steps:
            result = recompute.recompute(settings, cutoff=day)
            run_id = result.run_id
            summary.update(locations=result.locations, tweets_in_view=result.tweets)
    return BatchSummary(cutoff=day, run_id=run_id, steps=steps, **summary)  # type: ignore[arg-type]


@contextmanager
def batch_lock(settings: Settings, *, wait_seconds: float) -> Iterator[None]:
    """Hold the schema's batch lock for the whole run, or raise `BatchBusyError`.

    Two runs at once would both archive the same offsets and both load the same objects;
    each step is idempotent, but the lock makes "one run at a time" plain rather than
    subtle. It is `warehouse.try_session_lock`'s: an advisory lock on PostgreSQL, released
    also if this process is killed; a lease on Redshift, which then expires. Its key is
    derived from the schema, so pipelines in different schemas (as in the tests) do not
    block each other.
    """
    key = f"{_LOCK_NAME}:{settings.warehouse_schema}"
    held: list[warehouse.SessionLock] = []

    def locked() -> bool:
        lock = warehouse.try_session_lock(settings, key)
        if lock is not None:
            held.append(lock)
        return lock is not None

    wait_until(
        locked,
        wait_seconds,
        f"the batch run that holds schema {settings.warehouse_schema!r} to finish",
        hint="Another batch run is using that schema: let it finish, then run again.",
        error=BatchBusyError,
    )
    with closing(held[0]):
        yield


def pipeline_day(settings: Settings | None = None) -> date:
    """The day (``contract.ingest_day``) of the pipeline clock: the earliest of each
    partition's last record.

    Empty partitions do not count; falls back to today's day when the topic is empty.
    """
    settings = settings or get_settings()
    consumer = kafka_io.consumer(settings, client_id="lambda-demo-pipeline-clock")
    with closing(consumer):
        offsets = kafka_io.partition_offsets(settings, settings.topic, consumer=consumer)
        stamps = [
            _last_timestamp(settings, consumer, partition, end=end)
            for partition, (begin, end) in offsets.items()
            if end > begin
        ]
    known = [stamp for stamp in stamps if stamp is not None and ingest_time(stamp) is not None]
    if not known:
        return ingest_day_of(datetime.now(UTC))
    return ingest_day(min(known))


def _last_timestamp(
    settings: Settings, consumer: KafkaConsumer, partition: int, *, end: int
) -> int | None:
    """The timestamp of the record at ``end - 1``; None if that offset holds no record.

    (A transactional producer's commit marker occupies an offset but is not a record.)
    """
    for record in kafka_io.read_range(
        settings, settings.topic, partition, end - 1, end, consumer=consumer
    ):
        return record.timestamp
    return None
