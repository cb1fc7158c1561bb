"""The speed layer's write step, run by hand on a static slice (notebook 03).

A streaming query hands each micro-batch to its ``foreachBatch`` sink with the micro-batch's
id, on a thread Spark marks with the query's id (the local property ``sql.streaming.queryId``,
which ``SpeedViewSink`` records as the rows' *deployment*). `write_as_micro_batch` does the
same for a static DataFrame, so the notebook runs the real sink, its claim by batch id
included, on the slice it built step by step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

QUERY_ID = "sql.streaming.queryId"


def write_as_micro_batch(
    sink: Callable[[DataFrame, int], None], frame: DataFrame, batch_id: int, *, deployment: str
) -> None:
    """Call ``sink`` with ``frame`` as micro-batch ``batch_id`` of a query named ``deployment``."""
    context = frame.sparkSession.sparkContext
    previous = context.getLocalProperty(QUERY_ID)
    context.setLocalProperty(QUERY_ID, deployment)
    try:
        sink(frame, batch_id)
    finally:
        context.setLocalProperty(QUERY_ID, previous)  # type: ignore[arg-type]
