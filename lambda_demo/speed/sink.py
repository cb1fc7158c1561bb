"""The speed layer's writes: exact additions to ``speed_view``, the quarantine, deployments.

**Exactly once.** Each micro-batch adds its new tweets' sums (``stream.aggregate``) to
``speed_view`` in the transaction that records its batch id, and a batch id already recorded
is skipped: a micro-batch Spark replays after a crash cannot count twice.

**Deployments.** Rows belong to a *deployment*: the streaming query's id, which its
checkpoint keeps across restarts. Serving reads one deployment's rows. A new deployment (a
changed query, or a wiped checkpoint) rebuilds every day from Kafka under its own id while
serving keeps reading the old one; at its first micro-batch that reaches the end of the
topic it takes over in one transaction that also deletes the old deployment's rows, and the
old deployment's sink refuses to write from then on. Nothing an old query wrote can leak.

**Discarding.** A batch run that publishes cutoff D deletes the speed rows of days before D
in the same transaction (``lambda_demo.batch.recompute``); the sink skips those days too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from psycopg2.extensions import cursor

from lambda_demo import view
from lambda_demo.clients import warehouse
from lambda_demo.clients.dialect import per_dialect
from lambda_demo.contract import ingest_time, served_by_batch
from lambda_demo.errors import LambdaDemoError
from lambda_demo.ingestion.clock import format_utc
from lambda_demo.settings import Settings
from lambda_demo.speed.stream import aggregate

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame

logger = logging.getLogger(__name__)

NO_WATERMARK = "1970-01-01T00:00:00.000Z"  # what Spark reports before it has a watermark


class DeploymentRetired(LambdaDemoError):
    """A speed query whose deployment a newer one replaced tried to write."""


class CheckpointWithoutRows(LambdaDemoError):
    """A checkpoint has progress that this warehouse never received (it was reset)."""


class MeasureAddedLater(LambdaDemoError):
    """The view gained a measure after this deployment had counted tweets without it."""


def _deployment(batch: DataFrame) -> str:
    """The id of the streaming query running this micro-batch (kept by its checkpoint)."""
    return batch.sparkSession.sparkContext.getLocalProperty("sql.streaming.queryId")


# The speed layer's statements besides the upsert (`warehouse.speed_upsert_sql`) and the
# quarantine (`warehouse.insert_quarantine`); ``lambda-demo sql`` prints them.
READ_CUTOFF = "SELECT cutoff_day FROM batch_meta"
COMMIT_BATCH = per_dialect(
    "UPDATE speed_deployments SET batch_id = %s, committed_at = {now} WHERE deployment = %s"
)
READ_DEPLOYMENT = "SELECT batch_id, retired_at FROM speed_deployments WHERE deployment = %s"
# The first deployment serves at once; serving changes only under lock_speed_view, which
# keeps it on one row where Redshift has no unique index to.
REGISTER_DEPLOYMENT = (
    "INSERT INTO speed_deployments (deployment, checkpoint, serving) "
    "SELECT %s, %s, NOT EXISTS (SELECT 1 FROM speed_deployments WHERE serving)"
)
READ_PROGRESS = (
    "SELECT serving, retired_at, progress_batch_id, batch_id FROM speed_deployments "
    "WHERE deployment = %s"
)
RECORD_PROGRESS = (
    "UPDATE speed_deployments SET progress_batch_id = %s, "
    "end_offsets = COALESCE(%s, end_offsets), state_rows = COALESCE(%s, state_rows), "
    "late_rows = late_rows + %s, watermark = COALESCE(%s, watermark) "
    "WHERE deployment = %s"
)
RETIRE_OLDER = per_dialect(
    "UPDATE speed_deployments SET serving = FALSE, retired_at = COALESCE(retired_at, {now}) "
    "WHERE deployment <> %(d)s AND started_at <= "
    "(SELECT started_at FROM speed_deployments WHERE deployment = %(d)s)"
)
SERVE = "UPDATE speed_deployments SET serving = TRUE WHERE deployment = %s"
DELETE_RETIRED_ROWS = (
    "DELETE FROM speed_view WHERE deployment IN "
    "(SELECT deployment FROM speed_deployments WHERE retired_at IS NOT NULL)"
)


def rows_without_a_measure_sql() -> str:
    """A row of a deployment that lacks one of the view's measures (added after it counted).

    Built at each call: a notebook or a test may add a measure at run time.
    """
    missing = " OR ".join(f"{m} IS NULL" for m in view.MEASURE_NAMES)
    return f"SELECT 1 FROM speed_view WHERE deployment = %s AND ({missing}) LIMIT 1"


class SpeedViewSink:
    """``foreachBatch`` sink: a micro-batch's sums added, with its batch id, in one transaction."""

    def __init__(self, settings: Settings, checkpoint: str) -> None:
        self.settings = settings
        self.checkpoint = checkpoint

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        deployment = _deployment(batch)
        # Spark runs the micro-batch here, before the transaction: no lock on speed_view is
        # held while it does. A micro-batch already committed is computed, then skipped.
        sums = aggregate(batch).astype(object)  # Python ints, which psycopg2 sends
        rows = list(sums[["ingest_day", *view.COLUMNS]].itertuples(index=False, name=None))
        conn = warehouse.connect(self.settings)
        try:
            with conn, conn.cursor() as cur:
                warehouse.lock_speed_view(cur)
                if not self._claim(cur, deployment, batch_id):
                    logger.info("micro-batch %d already committed; skipping", batch_id)
                    return
                self._refuse_a_measure_added_later(cur, deployment)
                cur.execute(READ_CUTOFF)
                meta = cur.fetchone()
                # Days the batch layer has absorbed are no longer the speed layer's.
                cutoff = meta[0] if meta else None
                rows = [r for r in rows if not served_by_batch(r[0], cutoff)]
                if rows:
                    warehouse.upsert_speed_rows(cur, [(deployment, *r) for r in rows])
                cur.execute(COMMIT_BATCH[warehouse.dialect_of(cur)], (batch_id, deployment))
        finally:
            conn.close()

    def _claim(self, cur: cursor, deployment: str, batch_id: int) -> bool:
        """Register a new deployment; False if ``batch_id`` is already committed.

        The first deployment of a warehouse serves at once (there is nothing to protect);
        any later one starts in the wings and takes over in `record_progress`. Raises
        `DeploymentRetired` for a replaced deployment, and `CheckpointWithoutRows` for a
        checkpoint whose earlier micro-batches this warehouse never saw: it would add only
        the tweets it meets from now on, and serving would under-count.
        """
        cur.execute(READ_DEPLOYMENT, (deployment,))
        row = cur.fetchone()
        if row is None and batch_id > 0:
            raise CheckpointWithoutRows(
                f"The speed checkpoint {self.checkpoint} has processed micro-batches that this "
                "warehouse never received (was it reset?). Delete that checkpoint directory: the "
                "speed layer then rebuilds its view from Kafka."
            )
        if row is None:
            cur.execute(REGISTER_DEPLOYMENT, (deployment, self.checkpoint))
            return True
        last, retired_at = row
        if retired_at is not None:
            raise DeploymentRetired(
                f"The speed query with checkpoint {self.checkpoint} was replaced by a newer "
                f"deployment at {format_utc(retired_at)}: delete that checkpoint "
                "directory to deploy it again."
            )
        return batch_id > last

    def _refuse_a_measure_added_later(self, cur: cursor, deployment: str) -> None:
        """Raise `MeasureAddedLater` if this deployment counted tweets before a measure existed.

        Spark's state holds only tweet ids, so it resumes happily after a measure is added;
        but the sums already in ``speed_view`` lack the new measure, and adding to them would
        serve a number that misses every tweet counted before. A new deployment (a new
        checkpoint) counts every tweet from Kafka again, with the new measure.
        """
        cur.execute(rows_without_a_measure_sql(), (deployment,))
        if cur.fetchone() is not None:
            raise MeasureAddedLater(
                f"The view has a measure that the speed query with checkpoint {self.checkpoint} "
                "did not count from the start: run the speed layer with a new checkpoint "
                "(delete that checkpoint directory); it rebuilds the view from Kafka."
            )


def quarantine_rejected(settings: Settings, rejected: pd.DataFrame) -> None:
    """Record ``rejected`` (`stream.validator`'s rows with a reason) in the quarantine.

    Called by the Spark worker that validated them, so each record is read and validated
    once. Idempotent by (partition, offset): a task Spark runs again, or a new deployment
    reading the topic from the start, rewrites nothing.
    """
    if rejected.empty:
        return
    rows = [
        (int(partition), int(offset), ingest_time(int(ms)), reason, raw)
        for partition, offset, ms, reason, raw in rejected[
            ["kafka_partition", "kafka_offset", "ingest_ms", "reason", "raw_value"]
        ].itertuples(index=False, name=None)
    ]
    conn = warehouse.connect(settings)
    try:
        with conn, conn.cursor() as cur:
            warehouse.insert_quarantine(cur, "speed", rows)
    finally:
        conn.close()


def _offsets(sources: list[Mapping[str, Any]], field: str) -> dict[str, int] | None:
    """``{partition: next offset}`` over every Kafka source of a progress report."""
    merged: dict[str, int] = {}
    for source in sources:
        value = source.get(field)
        if not value:
            return None
        for partitions in (json.loads(value) if isinstance(value, str) else value).values():
            merged.update({str(p): int(o) for p, o in partitions.items()})
    return merged


def record_progress(settings: Settings, progress: Mapping[str, Any]) -> None:
    """Store a micro-batch's progress report; a deployment that has caught up takes over.

    Caught up means the micro-batch ended at the newest offset of every partition. Taking
    over is one transaction: this deployment serves, every other one retires, and their rows
    are deleted - a reader sees the old deployment's rows or the new one's, never a mix.
    Called for each report by a listener, and once more when a query stops; a report already
    recorded is ignored.
    """
    deployment, batch_id = progress["id"], progress["batchId"]
    ends = _offsets(progress.get("sources", []), "endOffset")
    latest = _offsets(progress.get("sources", []), "latestOffset")
    operators = progress.get("stateOperators") or []
    watermark = (progress.get("eventTime") or {}).get("watermark")
    conn = warehouse.connect(settings)
    try:
        with conn, conn.cursor() as cur:
            warehouse.lock_speed_view(cur)
            cur.execute(READ_PROGRESS, (deployment,))
            row = cur.fetchone()
            # Only micro-batches the sink committed, each once: Spark also reports a trigger
            # that found nothing new, under the id the next micro-batch will have.
            if row is None or not row[2] < batch_id <= row[3]:
                return
            serving, retired_at, _, _ = row
            cur.execute(
                RECORD_PROGRESS,
                (
                    batch_id,
                    json.dumps(ends) if ends is not None else None,
                    sum(op["numRowsTotal"] for op in operators) if operators else None,
                    sum(op.get("numRowsDroppedByWatermark", 0) for op in operators),
                    None if watermark in (None, NO_WATERMARK) else watermark,
                    deployment,
                ),
            )
            caught_up = (
                ends is not None
                and latest is not None
                and all(ends.get(p, -1) >= offset for p, offset in latest.items())
            )
            if not serving and retired_at is None and caught_up:
                _take_over(cur, deployment)
    finally:
        conn.close()


def _take_over(cur: cursor, deployment: str) -> None:
    """``deployment`` serves from now on; every deployment started before it retires and
    its rows go, in the caller's transaction. A newer one still catching up is left alone."""
    cur.execute(RETIRE_OLDER[warehouse.dialect_of(cur)], {"d": deployment})
    cur.execute(SERVE, (deployment,))
    cur.execute(DELETE_RETIRED_ROWS)
    logger.info("speed deployment %s caught up and now serves", deployment)
