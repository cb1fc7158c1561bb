"""Human fault tolerance: heal a bad speed layer, rebuild a warehouse, Lambda vs Kappa.

Notebook 06 uses these to show the Lambda Architecture's strongest promise: the master
dataset is immutable, so any view - however wrong a deployed bug made it - can be recomputed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from lambda_demo import serving, view, warehouse
from lambda_demo.batch.loader import load
from lambda_demo.batch.recompute import recompute
from lambda_demo.settings import Settings
from lambda_demo.speed import run_speed

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame


def buggy_aggregates(parsed: DataFrame) -> DataFrame:
    """A plausible bug: the developer "simplified" the query and dropped the deduplication.

    Every duplicate delivery is now counted: the speed view over-counts.
    """
    from pyspark.sql import functions as F

    return (
        parsed.where(F.col("reason").isNull())
        .withColumn("ingest_day", F.to_date("ingest_ts"))
        .groupBy("ingest_day", view.KEY)
        .agg(*view.spark_aggregates())
    )


def deploy_buggy_speed_layer(settings: Settings) -> None:
    """Run the buggy query once, on its own checkpoint, into the real ``speed_view``."""
    run_speed(settings, once=True, aggregate=buggy_aggregates, checkpoint_name="speed_view_buggy")


def deploy_fixed_speed_layer(settings: Settings, *, version: int = 2) -> None:
    """The fix, deployed as a new query: a new checkpoint, absolute values overwrite the bad."""
    run_speed(settings, once=True, checkpoint_name=f"speed_view_v{version}")


@dataclass(frozen=True)
class Recomputation:
    """A view recomputed into a fresh warehouse schema, and how long it took."""

    how: str
    schema: str
    seconds: float
    view: pd.DataFrame


def rebuild_from_master_dataset(settings: Settings, *, schema: str, cutoff: date) -> Recomputation:
    """Lambda: load the S3 master dataset into an empty warehouse and recompute the view."""
    target = settings.model_copy(update={"warehouse_schema": schema})
    warehouse.ensure_schema(target)
    started = time.perf_counter()
    load(target, progress=False)
    recompute(target, cutoff=cutoff)
    seconds = time.perf_counter() - started
    return Recomputation("batch: S3 -> warehouse -> SQL", schema, seconds, _batch_view(target))


def reprocess_from_kafka(settings: Settings, *, schema: str) -> Recomputation:
    """Kappa: no batch layer; replay the whole topic through the streaming code from offset 0."""
    target = settings.model_copy(
        update={
            "warehouse_schema": schema,
            "checkpoint_location": f"{settings.checkpoints}/kappa-{schema}",
        }
    )
    warehouse.ensure_schema(target)
    started = time.perf_counter()
    run_speed(target, once=True)
    seconds = time.perf_counter() - started
    return Recomputation("stream: Kafka -> Spark", schema, seconds, serving.serving_view(target))


def _batch_view(settings: Settings) -> pd.DataFrame:
    """The current batch view only (no speed part), in the serving view's layout."""
    import pandas as pd

    columns = ", ".join(view.COLUMNS)
    conn = warehouse.connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                f"SELECT {columns} FROM batch_view "
                "WHERE run_id = (SELECT run_id FROM batch_meta) ORDER BY location"
            )
            frame = pd.DataFrame(cur.fetchall(), columns=list(view.COLUMNS))
    finally:
        conn.close()
    for name in view.MEASURE_NAMES:
        frame[name] = frame[name].astype("int64")
    return frame
