"""Human fault tolerance: heal a bad speed layer, rebuild a warehouse, Lambda vs Kappa.

Notebook 06 uses these to show the Lambda Architecture's strongest promise: the master
dataset is immutable, so any view - however wrong a deployed bug made it - can be recomputed.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from psycopg2 import sql as psql

from lambda_demo import view
from lambda_demo.batch.loader import load
from lambda_demo.batch.recompute import recompute
from lambda_demo.clients import warehouse
from lambda_demo.serving import reads
from lambda_demo.settings import Settings
from lambda_demo.speed.run import run_speed

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure
    from pyspark.sql import DataFrame


def buggy_aggregates(tweets: DataFrame) -> DataFrame:
    """A plausible bug: the developer "simplified" the query and dropped the deduplication.

    Every duplicate delivery is now counted: the speed view over-counts. (The day is still
    right: ``to_date`` works in Spark's session time zone, ``contract.INGEST_DAY_ZONE``.)
    """
    from pyspark.sql import functions as F

    return (
        tweets.withColumn("ingest_day", F.to_date("ingest_ts"))
        .groupBy("ingest_day", view.KEY)
        .agg(*view.spark_aggregates())
    )


def fresh_workspace(settings: Settings, *, schema: str) -> Settings:
    """Settings for an empty warehouse schema with its own checkpoints (dropped if present).

    Recovery experiments start from nothing each time, so re-running a notebook tells the
    same story: a query restarted from an old checkpoint would have nothing new to process.
    """
    target = settings.model_copy(
        update={
            "warehouse_schema": schema,
            "checkpoint_location": f"{settings.checkpoints}/workspace-{schema}",
        }
    )
    conn = warehouse.connect(target)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                psql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psql.Identifier(schema))
            )
    finally:
        conn.close()
    shutil.rmtree(target.checkpoints, ignore_errors=True)
    warehouse.ensure_schema(target)
    return target


def deploy_buggy_speed_layer(settings: Settings) -> None:
    """Run the buggy query once, on its own checkpoint, into the real ``speed_view``."""
    run_speed(settings, once=True, aggregate=buggy_aggregates, checkpoint_name="speed_view_buggy")


def deploy_fixed_speed_layer(settings: Settings, *, version: int = 2) -> None:
    """The fix, deployed as a new query: a new checkpoint is a new deployment, which rebuilds
    the speed view from Kafka and, once caught up, replaces every row of the buggy one."""
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
    target = fresh_workspace(settings, schema=schema)
    started = time.perf_counter()
    load(target, progress=False)
    recompute(target, cutoff=cutoff)
    seconds = time.perf_counter() - started
    return Recomputation("batch: S3 -> warehouse -> SQL", schema, seconds, _batch_view(target))


def reprocess_from_kafka(settings: Settings, *, schema: str) -> Recomputation:
    """Kappa: no batch layer; replay the whole topic through the streaming code from offset 0."""
    target = fresh_workspace(settings, schema=schema)
    started = time.perf_counter()
    run_speed(target, once=True)
    seconds = time.perf_counter() - started
    return Recomputation("stream: Kafka -> Spark", schema, seconds, reads.serving_view(target))


def _batch_view(settings: Settings) -> pd.DataFrame:
    """The current batch view only (no speed part), in the serving view's layout."""
    frame = warehouse.fetch_frame(
        f"SELECT {', '.join(view.COLUMNS)} FROM batch_serving ORDER BY location",
        settings=settings,
    )
    return frame.astype({name: "int64" for name in view.MEASURE_NAMES})


def overcount_figure(mismatches: pd.DataFrame, *, top: int = 12) -> Figure:
    """Bar chart of the tweets a buggy view over-counts, per location (from ``check``)."""
    import matplotlib.pyplot as plt

    extra = (mismatches["tweet_count_serving"] - mismatches["tweet_count_expected"]).rename(
        "extra tweets"
    )
    worst = mismatches.assign(extra=extra).nlargest(top, "extra")
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.barh(worst["location"].str.slice(0, 30)[::-1], worst["extra"][::-1], color="#C44E52")
    ax.set_xlabel("tweets counted more than once")
    ax.set_title(
        f"What the bug did: {int(extra.sum())} extra tweets over {len(mismatches)} locations"
    )
    fig.tight_layout()
    return fig


def timing_figure(seconds: dict[str, float]) -> Figure:
    """Side-by-side bars: how long each way of recomputing the view took."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.barh(list(seconds), list(seconds.values()), color=["#DD8452", "#55A868"])
    for y, value in enumerate(seconds.values()):
        ax.text(value, y, f" {value:.1f} s", va="center")
    ax.set_xlabel("seconds to recompute the whole view")
    ax.set_title("Lambda (recompute from S3) vs Kappa (reprocess the log)")
    fig.tight_layout()
    return fig
