"""The speed layer: Spark Structured Streaming from Kafka into an exact ``speed_view``.

Read -> validate -> deduplicate -> aggregate -> write, as two streaming queries on one topic:

* ``speed_view``: valid tweets, duplicates of a tweet id dropped, aggregated per (ingest day,
  location) in *update* mode. Each micro-batch upserts the **absolute** totals of the groups
  it changed and records its batch id in the same transaction, so a micro-batch replayed
  after a crash rewrites the same values instead of counting twice.
* ``speed_quarantine``: records that break the contract, with the raw bytes and the reason.

Validation runs the package's own ``contract.parse_record`` on Arrow batches
(``mapInPandas``), so Spark, the batch loader and ``check`` apply the very same rules.

**What keeps the state small.** The speed layer only has to cover what the batch layer has
not absorbed yet, so it must forget. Each day is an event-time window on the ingest time,
and the query carries a watermark `WATERMARK` behind the newest ingest time it has seen.
Once the watermark passes the end of a day, Spark evicts that day's groups from its state
(so at most three days of groups are held: the day that is closing, today, and briefly the
day before), and the deduplication forgets a tweet id once the watermark has passed its
ingest time plus `WATERMARK` (so about two days of ids). However long the stream runs, the
state stays that size (``lambda-demo status`` shows ``state_rows``). 25 hours, because a
duplicate delivery may come a day late, across midnight, and must still be recognised.

**Records later than the watermark** are dropped by Spark: the speed layer has already
forgotten their day. Nothing is lost: the master dataset has them, and the next batch run
whose cutoff is past their day counts them. ``check`` says so when that is the only
difference (Spark counts them as ``late_rows``).

**One far-future record cannot switch the speed layer off.** A watermark follows the newest
ingest time, so one record stamped next year would make every later record "late". Each
Kafka partition therefore gets its own watermark, and the query's watermark is the *minimum*
of them (Spark's default policy for several inputs): one foreign record moves only its own
partition's watermark. (A producer writing such records into every partition would move it;
the records are still counted, by the batch layer, and ``status`` shows the watermark.) The
price: Spark counts a partition that has received nothing since the query started as being
at time zero, so the watermark, and with it the eviction, waits until every partition of
the topic has delivered a valid tweet in the current run. A live topic keyed by tweet id
fills every partition within seconds; a topic with an idle partition keeps its state.

**Deployments.** Rows belong to a *deployment*: the streaming query's id, which its
checkpoint keeps across restarts. Serving reads one deployment's rows. A new deployment (a
changed query, or a wiped checkpoint) rebuilds every day from Kafka under its own id while
serving keeps reading the old one; at its first micro-batch that reaches the end of the
topic it takes over in one transaction that also deletes the old deployment's rows, and the
old deployment's sink refuses to write from then on. Nothing an old query wrote can leak.

**Discarding.** A batch run that publishes cutoff D deletes the speed rows of days before D
in the same transaction (``lambda_demo.batch.recompute``); the sink skips those days too.

Usage::

    lambda-demo speed            # runs until Ctrl-C, one micro-batch every 2 s
    lambda-demo speed --once     # processes what is in Kafka now, then exits
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from psycopg2.extensions import cursor
from psycopg2.extras import execute_values

from lambda_demo import kafka_io, view, warehouse
from lambda_demo.contract import Rejected, ingest_time, parse_record
from lambda_demo.errors import LambdaDemoError
from lambda_demo.settings import Settings, get_settings
from lambda_demo.spark import get_spark

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

logger = logging.getLogger(__name__)

WATERMARK = "25 hours"
"""How far behind the newest ingest time the speed layer still accepts a record."""

_NO_WATERMARK = "1970-01-01T00:00:00.000Z"  # what Spark reports before it has a watermark

DAY = "1 day"

PARSED_SCHEMA = (
    "kafka_partition int, kafka_offset long, ingest_ms long, reason string, "
    "raw_value binary, tweet_id string, location string, "
    "followers_count long, like_count long, retweet_count long"
)
_FLAT_FIELDS = ["tweet_id", "location", "followers_count", "like_count", "retweet_count"]


class DeploymentRetired(LambdaDemoError):
    """A speed query whose deployment a newer one replaced tried to write."""


class CheckpointWithoutRows(LambdaDemoError):
    """A checkpoint has progress that this warehouse never received (it was reset)."""


def validate_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Apply the ingestion contract to Kafka rows (runs in Spark's Python workers)."""
    import pandas as pd

    for batch in batches:
        out: dict[str, list] = {name: [] for name in ("reason", "raw_value", *_FLAT_FIELDS)}
        for value, ingest_ms in zip(batch["value"], batch["ingest_ms"], strict=True):
            parsed = parse_record(value, int(ingest_ms))
            valid = not isinstance(parsed, Rejected)
            out["reason"].append(None if valid else parsed.reason)
            out["raw_value"].append(None if valid else value)
            for name in _FLAT_FIELDS:
                out[name].append(getattr(parsed, name) if valid else None)
        frame = pd.DataFrame(
            {
                "kafka_partition": batch["partition"].astype("int32"),
                "kafka_offset": batch["offset"],
                "ingest_ms": batch["ingest_ms"],
            }
        )
        for name, values in out.items():
            # Nullable Int64, not float64: sums and counts beyond 2**53 must stay exact.
            dtype = "Int64" if name.endswith("_count") else "object"
            frame[name] = pd.Series(values, dtype=dtype, index=frame.index)
        yield frame


def topic_partitions(settings: Settings) -> list[int]:
    """The partitions of the ``tweets`` topic, or an error that says what to do."""
    consumer = kafka_io.consumer(settings, client_id="lambda-demo-speed")
    try:
        ids = consumer.partitions_for_topic(settings.topic)
    finally:
        consumer.close()
    if not ids:
        raise LambdaDemoError(
            f"Topic {settings.topic!r} does not exist: start the stack (`lambda-demo stack up`) "
            "or check LAMBDA_DEMO_TOPIC."
        )
    return sorted(ids)


def parsed_stream(
    spark: SparkSession, settings: Settings, *, partition: int | None = None
) -> DataFrame:
    """Kafka rows with the contract applied: one output row per input record.

    ``partition`` reads one partition of the topic only (see `valid_tweets`).
    """
    from pyspark.sql import functions as F

    source = (
        {"assign": json.dumps({settings.topic: [partition]})}
        if partition is not None
        else {"subscribe": settings.topic}
    )
    return (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", kafka_io.bootstrap(settings))
        .options(**source)
        .option("startingOffsets", "earliest")
        .option("failOnDataLoss", "true")
        .option("maxOffsetsPerTrigger", 200_000)
        .load()
        # Milliseconds, not timestamps, cross into Python: pandas timestamps end in 2262, and
        # a foreign producer may stamp a record in year 9999.
        .select("partition", "offset", F.unix_millis("timestamp").alias("ingest_ms"), "value")
        .mapInPandas(validate_batches, schema=PARSED_SCHEMA)
        .withColumn("ingest_ts", F.timestamp_millis("ingest_ms"))
    )


def valid_tweets(spark: SparkSession, settings: Settings) -> DataFrame:
    """Valid tweets with their ingest time, each Kafka partition under its own watermark.

    Invalid records are filtered out *before* the watermark, so a quarantined timestamp
    cannot move it; one input per partition, so one far-ahead record moves only its own.
    """
    branches = [
        parsed_stream(spark, settings, partition=p)
        .where("reason IS NULL")
        .withWatermark("ingest_ts", WATERMARK)
        for p in topic_partitions(settings)
    ]
    return functools.reduce(lambda a, b: a.unionByName(b), branches)


def speed_aggregates(tweets: DataFrame) -> DataFrame:
    """Deduplicate within the watermark, then the view's measures per (ingest day, location).

    The day is a one-day event-time window on the ingest time (UTC, as the session's time
    zone is), so Spark knows when a day is complete and evicts its groups.
    """
    from pyspark.sql import functions as F

    return (
        tweets.dropDuplicatesWithinWatermark(["tweet_id"])
        .groupBy(F.window("ingest_ts", DAY).alias("day"), view.KEY)
        .agg(*view.spark_aggregates())
        .select(F.to_date("day.start").alias("ingest_day"), *view.COLUMNS)
    )


def _deployment(batch: DataFrame) -> str:
    """The id of the streaming query running this micro-batch (kept by its checkpoint)."""
    return batch.sparkSession.sparkContext.getLocalProperty("sql.streaming.queryId")


class SpeedViewSink:
    """``foreachBatch`` sink: absolute upserts plus the batch id, in one transaction."""

    def __init__(self, settings: Settings, checkpoint: str) -> None:
        self.settings = settings
        self.checkpoint = checkpoint

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        deployment = _deployment(batch)
        rows = [tuple(r) for r in batch.select("ingest_day", *view.COLUMNS).collect()]
        conn = warehouse.connect(self.settings)
        try:
            with conn, conn.cursor() as cur:
                warehouse.lock_speed_view(cur)
                if not self._claim(cur, deployment, batch_id):
                    logger.info("micro-batch %d already committed; skipping", batch_id)
                    return
                cur.execute("SELECT cutoff_day FROM batch_meta")
                meta = cur.fetchone()
                # Days the batch layer has absorbed are no longer the speed layer's.
                rows = [r for r in rows if meta is None or r[0] >= meta[0]]
                if rows:
                    columns = ", ".join(("deployment", "ingest_day", *view.COLUMNS))
                    updates = ", ".join(f"{m} = EXCLUDED.{m}" for m in view.MEASURE_NAMES)
                    execute_values(
                        cur,
                        f"INSERT INTO speed_view ({columns}) VALUES %s "
                        "ON CONFLICT (deployment, ingest_day, location) DO UPDATE SET "
                        f"{updates}, updated_at = now()",
                        [(deployment, *r) for r in rows],
                    )
                cur.execute(
                    "UPDATE speed_deployments SET batch_id = %s, committed_at = now() "
                    "WHERE deployment = %s",
                    (batch_id, deployment),
                )
        finally:
            conn.close()

    def _claim(self, cur: cursor, deployment: str, batch_id: int) -> bool:
        """Register a new deployment; False if ``batch_id`` is already committed.

        The first deployment of a warehouse serves at once (there is nothing to protect);
        any later one starts in the wings and takes over in `record_progress`. Raises
        `DeploymentRetired` for a replaced deployment, and `CheckpointWithoutRows` for a
        checkpoint whose earlier micro-batches this warehouse never saw: in update mode it
        would write only the groups it changes from now on, and serving would under-count.
        """
        cur.execute(
            "SELECT batch_id, retired_at FROM speed_deployments WHERE deployment = %s",
            (deployment,),
        )
        row = cur.fetchone()
        if row is None and batch_id > 0:
            raise CheckpointWithoutRows(
                f"The speed checkpoint {self.checkpoint} has processed micro-batches that this "
                "warehouse never received (was it reset?). Delete that checkpoint directory: the "
                "speed layer then rebuilds its view from Kafka."
            )
        if row is None:
            cur.execute(
                "INSERT INTO speed_deployments (deployment, checkpoint, serving) "
                "SELECT %s, %s, NOT EXISTS (SELECT 1 FROM speed_deployments WHERE serving)",
                (deployment, self.checkpoint),
            )
            return True
        last, retired_at = row
        if retired_at is not None:
            raise DeploymentRetired(
                f"The speed query with checkpoint {self.checkpoint} was replaced by a newer "
                f"deployment at {retired_at:%Y-%m-%d %H:%M:%S}: delete that checkpoint "
                "directory to deploy it again."
            )
        return batch_id > last


class QuarantineSink:
    """``foreachBatch`` sink for rejected records; idempotent by (partition, offset)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        rows = [
            (r.kafka_partition, r.kafka_offset, ingest_time(r.ingest_ms), r.reason, r.raw_value)
            for r in batch.select(
                "kafka_partition", "kafka_offset", "ingest_ms", "reason", "raw_value"
            ).collect()
        ]
        if not rows:
            return
        conn = warehouse.connect(self.settings)
        try:
            with conn, conn.cursor() as cur:
                execute_values(
                    cur,
                    "INSERT INTO quarantine (layer, kafka_partition, kafka_offset, ingest_ts, "
                    "reason, raw_value) VALUES %s ON CONFLICT DO NOTHING",
                    rows,
                    template="('speed', %s, %s, %s, %s, %s)",
                )
        finally:
            conn.close()
        logger.warning("quarantined %d records in micro-batch %d", len(rows), batch_id)


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
            cur.execute(
                "SELECT serving, retired_at, progress_batch_id, batch_id FROM speed_deployments "
                "WHERE deployment = %s",
                (deployment,),
            )
            row = cur.fetchone()
            # Only micro-batches the sink committed, each once: Spark also reports a trigger
            # that found nothing new, under the id the next micro-batch will have.
            if row is None or not row[2] < batch_id <= row[3]:
                return
            serving, retired_at, _, _ = row
            cur.execute(
                "UPDATE speed_deployments SET progress_batch_id = %s, "
                "end_offsets = COALESCE(%s, end_offsets), state_rows = COALESCE(%s, state_rows), "
                "late_rows = late_rows + %s, watermark = COALESCE(%s, watermark) "
                "WHERE deployment = %s",
                (
                    batch_id,
                    json.dumps(ends) if ends is not None else None,
                    sum(op["numRowsTotal"] for op in operators) if operators else None,
                    sum(op.get("numRowsDroppedByWatermark", 0) for op in operators),
                    None if watermark in (None, _NO_WATERMARK) else watermark,
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
    cur.execute(
        "UPDATE speed_deployments SET serving = FALSE, retired_at = COALESCE(retired_at, now()) "
        "WHERE deployment <> %(d)s AND started_at <= "
        "(SELECT started_at FROM speed_deployments WHERE deployment = %(d)s)",
        {"d": deployment},
    )
    cur.execute("UPDATE speed_deployments SET serving = TRUE WHERE deployment = %s", (deployment,))
    cur.execute(
        "DELETE FROM speed_view WHERE deployment IN "
        "(SELECT deployment FROM speed_deployments WHERE retired_at IS NOT NULL)"
    )
    logger.info("speed deployment %s caught up and now serves", deployment)


# Per Spark application: which view queries' progress to record, and with which settings.
_watched: dict[str, dict[str, Settings]] = {}
_watched_lock = threading.Lock()


def _watch(spark: SparkSession, query: StreamingQuery, settings: Settings) -> None:
    """Record every progress report of ``query`` (one listener per Spark session)."""
    from pyspark.sql.streaming import StreamingQueryListener

    app = spark.sparkContext.applicationId
    with _watched_lock:
        if app not in _watched:
            watched = _watched[app] = {}

            class ProgressListener(StreamingQueryListener):
                def onQueryStarted(self, event: Any) -> None:
                    pass

                def onQueryProgress(self, event: Any) -> None:
                    progress = json.loads(event.progress.json)
                    if (target := watched.get(progress["id"])) is None:
                        return
                    try:
                        record_progress(target, progress)
                    except Exception:  # a listener must never take Spark's listener bus down
                        logger.warning("could not record speed progress", exc_info=True)

                def onQueryIdle(self, event: Any) -> None:
                    pass

                def onQueryTerminated(self, event: Any) -> None:
                    pass

            spark.streams.addListener(ProgressListener())
        _watched[app][str(query.id)] = settings


def start_queries(
    settings: Settings | None = None,
    *,
    once: bool = False,
    trigger_seconds: float | None = None,
    aggregate: Callable[[DataFrame], DataFrame] = speed_aggregates,
    checkpoint_name: str = "speed_view",
) -> list[StreamingQuery]:
    """Start both streaming queries; ``once`` processes what is available, then stops.

    ``aggregate`` and ``checkpoint_name`` exist for notebook 06, which deploys a deliberately
    wrong aggregation and then the fixed one: a changed query needs a new checkpoint, which
    makes it a new deployment, and the new deployment replaces the old one's rows whole.
    """
    from pyspark.sql import functions as F

    settings = settings or get_settings()
    warehouse.ensure_schema(settings)
    spark = get_spark(settings)
    checkpoint = f"{settings.checkpoints}/{checkpoint_name}"
    trigger = (
        {"availableNow": True}
        if once
        else {"processingTime": f"{trigger_seconds or settings.trigger_seconds} seconds"}
    )
    view_query = (
        aggregate(valid_tweets(spark, settings))
        .writeStream.queryName(f"{checkpoint_name}_{settings.warehouse_schema}")
        .outputMode("update")
        .foreachBatch(SpeedViewSink(settings, checkpoint))
        .option("checkpointLocation", checkpoint)
        .trigger(**trigger)
        .start()
    )
    _watch(spark, view_query, settings)
    quarantine_query = (
        parsed_stream(spark, settings)
        .where(F.col("reason").isNotNull())
        .writeStream.queryName(f"speed_quarantine_{settings.warehouse_schema}")
        .foreachBatch(QuarantineSink(settings))
        .option("checkpointLocation", f"{settings.checkpoints}/speed_quarantine")
        .trigger(**trigger)
        .start()
    )
    return [view_query, quarantine_query]


def await_first_batch(queries: list[StreamingQuery], timeout: float = 300.0) -> None:
    """Wait until every query finished its first micro-batch: Spark's JVM, the Python
    workers and the state store are warm, so what is produced next is seen promptly.

    A query that dies meanwhile raises its error here instead of failing later, mid-demo.
    """
    deadline = time.monotonic() + timeout
    while waiting := [q for q in queries if q.lastProgress is None]:
        for query in waiting:
            if not query.isActive and query.lastProgress is None:  # stopped, never progressed
                raise _query_error(query) or RuntimeError(
                    f"speed query {query.name} stopped before its first micro-batch"
                )
        if time.monotonic() > deadline:
            raise TimeoutError(f"the speed layer did not finish a micro-batch in {timeout:.0f} s")
        time.sleep(0.2)


def _query_error(query: StreamingQuery) -> Exception | None:
    """The query's failure; a retired deployment's becomes the one-line error it is."""
    error = query.exception()
    if error is None:
        return None
    for kind in (DeploymentRetired, CheckpointWithoutRows):
        _, marker, message = str(error).partition(f"{kind.__name__}: ")
        if marker:
            return kind(message.splitlines()[0])
    return error


def stop_queries(queries: list[StreamingQuery], settings: Settings | None = None) -> None:
    """Stop the queries and record the view query's progress reports.

    The listener receives reports asynchronously; recording the recent ones here, in order,
    means that when this returns, ``speed_deployments`` (and a take-over) reflect everything
    processed, and a report the listener had not reached yet is not skipped.
    """
    settings = settings or get_settings()
    for query in queries:
        if query.isActive:
            query.stop()
    if queries[0].exception() is None:
        for report in queries[0].recentProgress:
            record_progress(settings, json.loads(report.json))


def run_speed(
    settings: Settings | None = None,
    *,
    once: bool = False,
    trigger_seconds: float | None = None,
    **query_options: Any,
) -> None:
    """``lambda-demo speed``: run until Ctrl-C/SIGTERM (or once), stopping cleanly."""
    settings = settings or get_settings()
    queries = start_queries(settings, once=once, trigger_seconds=trigger_seconds, **query_options)
    try:
        if once:
            for query in queries:
                with contextlib.suppress(Exception):  # its error is raised below, in words
                    query.awaitTermination()
        else:
            while all(q.isActive for q in queries):
                time.sleep(0.5)
    finally:
        stop_queries(queries, settings)
    for query in queries:
        if (error := _query_error(query)) is not None:
            raise error
