"""Rebuild the batch view from every loaded row, and swap it in atomically.

The batch layer never updates the view incrementally: each run recomputes it from all of
``raw_tweets``. That is slow compared with the speed layer, and that is the point: whatever
was wrong before (a bug, a late duplicate) is simply gone after the next run.

Two rules make the numbers right:

* **Deduplicate first, then cut.** A tweet delivered twice counts once, and its *first*
  delivery wins (``contract.FIRST_DELIVERY_ORDER``: the smallest ingest time, partition,
  offset). Only then are the days the batch view serves kept (``contract.served_by_batch``:
  the days before the cutoff D). Cutting first would let a tweet delivered on D-1 and again
  on D count on both sides: in the batch view for D-1 and in the speed view for D.
* **One transaction.** The new run's rows, the pointer in ``batch_meta``, the removal of
  the previous run's rows and of the speed rows for days before D commit together, so
  ``serving_view`` always reads exactly one complete run: the old one until the commit, the
  new one after it. That last deletion is the hand-over: the batch layer has absorbed those
  days, so the speed layer forgets them, and its view stays a few days small.
* **The cutoff never moves back.** The speed rows of days before the current D are gone;
  a run with an earlier cutoff would leave those days in neither view, so it is refused.

``ROW_NUMBER() OVER (...)`` rather than PostgreSQL's ``DISTINCT ON`` keeps the query valid on
Redshift, and ``batch_meta`` is replaced with DELETE + INSERT for the same reason (Redshift
has no ``ON CONFLICT``). Redshift enforces neither ``batch_meta``'s primary key nor its
one-row check: the DELETE + INSERT under `warehouse.lock_speed_view`, in the transaction
that publishes the run, is what keeps it one row (every writer of ``batch_meta`` is a
recompute, and recomputes take that lock). On Redshift that lock also makes serving readers
wait, for the publication only: it is taken after the long ``INSERT ... SELECT``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime

from psycopg2.extensions import cursor

from lambda_demo import view
from lambda_demo.clients import warehouse
from lambda_demo.contract import DeliveryColumns, sql_batch_days
from lambda_demo.errors import LambdaDemoError
from lambda_demo.ingestion.clock import format_utc
from lambda_demo.settings import Settings, get_settings

logger = logging.getLogger(__name__)

RAW_DELIVERY = DeliveryColumns(
    ingest_time="ingest_ts", partition="kafka_partition", offset="kafka_offset"
)
"""Where ``raw_tweets`` keeps each delivery's Kafka coordinates."""

# The publication, in this order, in the transaction that computed the run's rows.
READ_CUTOFF = "SELECT cutoff_day FROM batch_meta"
REPLACE_META = (
    "DELETE FROM batch_meta",
    "INSERT INTO batch_meta (run_id, cutoff_day) VALUES (%(run_id)s, %(cutoff)s)",
)
DELETE_OLD_RUNS = "DELETE FROM batch_view WHERE run_id <> %(run_id)s"
_DELETE_ABSORBED_SPEED_DAYS = f"DELETE FROM speed_view WHERE {sql_batch_days('ingest_day', '%s')}"
COUNT_RUN = (
    "SELECT COUNT(*), CAST(COALESCE(SUM(tweet_count), 0) AS BIGINT) "
    "FROM batch_view WHERE run_id = %(run_id)s"
)


class CutoffMovedBack(LambdaDemoError):
    """A batch run asked for a cutoff before the one already published."""


def moved_back_message(cutoff: date, current: date) -> str:
    return (
        f"The batch view already covers the days before {current} and the speed layer has "
        f"forgotten them, so cutoff {cutoff} would leave days uncounted. Use a cutoff on or "
        f"after {current}."
    )


@dataclass(frozen=True)
class RecomputeResult:
    run_id: str
    cutoff: date
    locations: int
    tweets: int


def new_run_id(now: datetime | None = None) -> str:
    """``YYYYmmddTHHMMSS-<8 hex>``: sorts by start time, and two runs never collide."""
    stamp = format_utc(now or datetime.now(UTC))  # 2024-03-04T05:06:07.000Z
    return f"{stamp[:19].replace('-', '').replace(':', '')}-{uuid.uuid4().hex[:8]}"


def batch_view_sql() -> str:
    """``INSERT .. SELECT`` of one run's view; parameters ``run_id`` and ``cutoff``.

    The SQL text is built only from `lambda_demo.view`'s constant measure definitions; the
    run id and cutoff are bind parameters.
    """
    measures = ", ".join(view.MEASURE_NAMES)
    # Only the columns the view needs go through the sort: with SELECT * a million rows
    # spilled to disk twice.
    needed = ", ".join((view.KEY, "ingest_day", *view.FIELDS_READ))
    return f"""
INSERT INTO batch_view (run_id, {view.KEY}, {measures})
SELECT %(run_id)s, {view.KEY}, {view.sql_select_list()}
FROM (
    SELECT {needed},
           ROW_NUMBER() OVER (
               PARTITION BY tweet_id
               ORDER BY {RAW_DELIVERY.sql_order_by()}
           ) AS delivery
    FROM raw_tweets
) AS deliveries
WHERE delivery = 1 AND {sql_batch_days("ingest_day", "%(cutoff)s")}
GROUP BY {view.KEY}
"""


# Sort memory for the deduplication of a few million rows, for the recompute's transaction
# only (PostgreSQL's default, 4 MB, sends the sort to disk twice; Redshift sorts on the cluster).
WORK_MEM = "128MB"
SET_WORK_MEM = "SELECT set_config('work_mem', %s, true)"


def use_work_mem(cur: cursor) -> None:
    """Give the current transaction ``WORK_MEM`` for its sorts (PostgreSQL only)."""
    cur.execute(SET_WORK_MEM, (WORK_MEM,))


def recompute(settings: Settings | None = None, *, cutoff: date) -> RecomputeResult:
    """Compute a new run of the batch view for ingest days before ``cutoff`` and publish it."""
    settings = settings or get_settings()
    run_id = new_run_id()
    conn = warehouse.connect(settings)
    try:
        with conn, conn.cursor() as cur:
            if settings.warehouse_dialect == "postgres":
                use_work_mem(cur)
            params = {"run_id": run_id, "cutoff": cutoff}
            cur.execute(batch_view_sql(), params)
            warehouse.lock_speed_view(cur)  # from here to the commit, no speed writes
            cur.execute(READ_CUTOFF)
            current = cur.fetchone()
            if current is not None and cutoff < current[0]:
                raise CutoffMovedBack(moved_back_message(cutoff, current[0]))
            for statement in (*REPLACE_META, DELETE_OLD_RUNS):
                cur.execute(statement, params)
            cur.execute(_DELETE_ABSORBED_SPEED_DAYS, (cutoff,))
            cur.execute(COUNT_RUN, params)
            locations, tweets = cur.fetchone()
    finally:
        conn.close()
    logger.info(
        "batch run %s: %d locations, %d tweets before %s", run_id, locations, tweets, cutoff
    )
    return RecomputeResult(run_id=run_id, cutoff=cutoff, locations=locations, tweets=tweets)
