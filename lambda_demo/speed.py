"""The speed layer: Spark Structured Streaming from Kafka into an exact ``speed_view``.

Read -> validate -> deduplicate -> aggregate -> write, as two streaming queries on one topic:

* ``speed_view``: valid tweets, duplicates of a tweet id dropped within a watermark of
  ``DEDUP_WATERMARK`` on ingest time, aggregated per (ingest day, location) in *update* mode.
  Each micro-batch upserts the **absolute** totals of the groups it changed and records its
  batch id in the same transaction, so a micro-batch replayed after a crash rewrites the same
  values instead of counting twice.
* ``speed_quarantine``: records that break the contract, with the raw bytes and the reason.

Validation runs the package's own ``contract.parse_flat`` on Arrow batches (``mapInPandas``),
so Spark, the batch loader and ``check`` apply the very same rules.

Usage::

    lambda-demo speed            # runs until Ctrl-C, one micro-batch every 2 s
    lambda-demo speed --once     # processes what is in Kafka now, then exits
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg2.extras import execute_values

from lambda_demo import kafka_io, view, warehouse
from lambda_demo.contract import Rejected, parse_flat
from lambda_demo.settings import Settings, get_settings
from lambda_demo.spark import get_spark

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

logger = logging.getLogger(__name__)

# A duplicate delivery arrives minutes after the original. Keeping every tweet id for 25 h
# of ingest time covers any duplicate up to a day late, including one that crosses midnight.
DEDUP_WATERMARK = "25 hours"

PARSED_SCHEMA = (
    "kafka_partition int, kafka_offset long, ingest_ms long, reason string, "
    "raw_value binary, tweet_id string, location string, "
    "followers_count long, like_count long, retweet_count long"
)
_FLAT_FIELDS = ["tweet_id", "location", "followers_count", "like_count", "retweet_count"]


def validate_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Apply the ingestion contract to Kafka rows (runs in Spark's Python workers)."""
    import pandas as pd

    for batch in batches:
        out: dict[str, list] = {name: [] for name in ("reason", "raw_value", *_FLAT_FIELDS)}
        for value in batch["value"]:
            parsed = parse_flat(value)
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


def parsed_stream(spark: SparkSession, settings: Settings) -> DataFrame:
    """Kafka rows with the contract applied: one output row per input record."""
    from pyspark.sql import functions as F

    return (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", kafka_io.bootstrap(settings))
        .option("subscribe", settings.topic)
        .option("startingOffsets", "earliest")
        .option("failOnDataLoss", "true")
        .option("maxOffsetsPerTrigger", 200_000)
        .load()
        # Milliseconds, not timestamps, cross into Python: pandas timestamps end in 2262, and
        # a foreign producer may stamp a record in year 9999.
        .select("partition", "offset", F.unix_millis("timestamp").alias("ingest_ms"), "value")
        .mapInPandas(validate_batches, schema=PARSED_SCHEMA)
        .withColumn("ingest_ts", F.timestamp_millis("ingest_ms"))
        .drop("ingest_ms")
    )


def speed_aggregates(parsed: DataFrame) -> DataFrame:
    """Deduplicate within the watermark, then the view's measures per (ingest day, location)."""
    from pyspark.sql import functions as F

    return (
        parsed.where(F.col("reason").isNull())
        .withWatermark("ingest_ts", DEDUP_WATERMARK)
        .dropDuplicatesWithinWatermark(["tweet_id"])
        .withColumn("ingest_day", F.to_date("ingest_ts"))
        .groupBy("ingest_day", view.KEY)
        .agg(*view.spark_aggregates())
    )


class SpeedViewSink:
    """``foreachBatch`` sink: absolute upserts plus the batch id, in one transaction."""

    def __init__(self, settings: Settings, checkpoint: Path) -> None:
        self.settings = settings
        self.checkpoint = checkpoint

    def query_name(self) -> str:
        """The checkpoint's query id: a wiped checkpoint starts a new commit sequence."""
        metadata = json.loads((self.checkpoint / "metadata").read_text())
        return f"speed_view:{metadata['id']}"

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        rows = [tuple(r) for r in batch.select("ingest_day", *view.COLUMNS).collect()]
        name = self.query_name()
        conn = warehouse.connect(self.settings)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT batch_id FROM speed_commits WHERE query_name = %s FOR UPDATE", (name,)
                )
                last = cur.fetchone()
                if last is not None and batch_id <= last[0]:
                    logger.info("micro-batch %d already committed; skipping", batch_id)
                    return
                if rows:
                    columns = ", ".join(("ingest_day", *view.COLUMNS))
                    updates = ", ".join(f"{m} = EXCLUDED.{m}" for m in view.MEASURE_NAMES)
                    execute_values(
                        cur,
                        f"INSERT INTO speed_view ({columns}) VALUES %s "
                        f"ON CONFLICT (ingest_day, location) DO UPDATE SET {updates}, "
                        "updated_at = now()",
                        rows,
                    )
                cur.execute(
                    "INSERT INTO speed_commits (query_name, batch_id) VALUES (%s, %s) "
                    "ON CONFLICT (query_name) DO UPDATE SET batch_id = EXCLUDED.batch_id, "
                    "committed_at = now()",
                    (name, batch_id),
                )
        finally:
            conn.close()


class QuarantineSink:
    """``foreachBatch`` sink for rejected records; idempotent by (partition, offset)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        rows = [
            (r.kafka_partition, r.kafka_offset, r.ingest_ts, r.reason, r.raw_value)
            for r in batch.collect()
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
    wrong aggregation and then the fixed one: a changed query needs a new checkpoint, and
    because the sink writes absolute values, the fixed query simply overwrites the bad rows.
    """
    from pyspark.sql import functions as F

    settings = settings or get_settings()
    warehouse.ensure_schema(settings)
    spark = get_spark(settings)
    checkpoints = Path(settings.checkpoints)
    trigger = (
        {"availableNow": True}
        if once
        else {"processingTime": f"{trigger_seconds or settings.trigger_seconds} seconds"}
    )
    parsed = parsed_stream(spark, settings)
    view_query = (
        aggregate(parsed)
        .writeStream.queryName(f"{checkpoint_name}_{settings.warehouse_schema}")
        .outputMode("update")
        .foreachBatch(SpeedViewSink(settings, checkpoints / checkpoint_name))
        .option("checkpointLocation", str(checkpoints / checkpoint_name))
        .trigger(**trigger)
        .start()
    )
    quarantine_query = (
        parsed.where(F.col("reason").isNotNull())
        .writeStream.queryName(f"speed_quarantine_{settings.warehouse_schema}")
        .foreachBatch(QuarantineSink(settings))
        .option("checkpointLocation", str(checkpoints / "speed_quarantine"))
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
                raise query.exception() or RuntimeError(
                    f"speed query {query.name} stopped before its first micro-batch"
                )
        if time.monotonic() > deadline:
            raise TimeoutError(f"the speed layer did not finish a micro-batch in {timeout:.0f} s")
        time.sleep(0.2)


def run_speed(
    settings: Settings | None = None,
    *,
    once: bool = False,
    trigger_seconds: float | None = None,
    **query_options: Any,
) -> None:
    """``lambda-demo speed``: run until Ctrl-C/SIGTERM (or once), stopping cleanly."""
    queries = start_queries(settings, once=once, trigger_seconds=trigger_seconds, **query_options)
    try:
        if once:
            for query in queries:
                query.awaitTermination()
        else:
            while all(q.isActive for q in queries):
                time.sleep(0.5)
    finally:
        for query in queries:
            if query.isActive:
                query.stop()
    for query in queries:
        if query.exception() is not None:
            raise query.exception()
