"""Run the speed layer: start, watch and stop its streaming query.

Usage::

    lambda-demo speed            # runs until Ctrl-C, one micro-batch every 2 s
    lambda-demo speed --once     # processes what is in Kafka now, then exits
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from lambda_demo.clients import warehouse
from lambda_demo.clients.spark import get_spark
from lambda_demo.errors import LambdaDemoError
from lambda_demo.ingestion.clock import wait_until
from lambda_demo.settings import Settings, get_settings
from lambda_demo.speed import stream
from lambda_demo.speed.sink import (
    CheckpointWithoutRows,
    DeploymentRetired,
    MeasureAddedLater,
    SpeedViewSink,
    record_progress,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

logger = logging.getLogger(__name__)


class SpeedLayerBusy(LambdaDemoError):
    """Another speed layer already writes this schema from the same checkpoint."""


class CheckpointOfAnotherQuery(LambdaDemoError):
    """A checkpoint holds the state of a different query, which Spark cannot resume."""


# Spark's error classes for a checkpoint whose state a different query wrote: a changed query,
# or one from an earlier version of this project (whose Spark state also held the sums).
STATE_OF_ANOTHER_QUERY = (
    "STREAMING_STATEFUL_OPERATOR_NOT_MATCH_IN_STATE_METADATA",
    "STATE_STORE_KEY_SCHEMA_NOT_COMPATIBLE",
    "STATE_STORE_VALUE_SCHEMA_NOT_COMPATIBLE",
)

# The checkpoint of each query started here, by query id, to name it in an error.
_checkpoints: dict[str, str] = {}


# The writer lock of each running speed query: it goes when the query is stopped or the
# process dies (on Redshift, a lease expires `warehouse.LEASE_SECONDS` after that).
_writers: dict[str, tuple[StreamingQuery, warehouse.SessionLock]] = {}


def _claim_writer(settings: Settings, checkpoint: str) -> warehouse.SessionLock:
    """Take the one-writer lock of (schema, checkpoint), or refuse in words.

    Two processes running the same checkpoint would both replay and upsert the same
    deployment's rows, interleaved. Spark refuses a duplicate inside one application only;
    this lock, in the warehouse both write to, refuses it across processes and machines
    (`warehouse.try_session_lock`: an advisory lock on PostgreSQL, a lease on Redshift).
    """
    for key, (query, lock) in list(_writers.items()):
        if not query.isActive:  # a query that failed and was never stopped frees its lock
            lock.close()
            del _writers[key]
    name = f"speed {settings.warehouse_schema} {checkpoint}"
    lock = warehouse.try_session_lock(settings, name)
    if lock is None:
        raise SpeedLayerBusy(
            f"A speed layer is already running on schema {settings.warehouse_schema!r} "
            f"with checkpoint {checkpoint}: stop it first (Ctrl-C in its terminal, or "
            "`stop_queries` in its notebook)."
        )
    return lock


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
    deduplicate: Callable[[DataFrame], DataFrame] = stream.deduplicate,
    checkpoint_name: str = "speed_view",
) -> list[StreamingQuery]:
    """Start the speed layer's streaming query; ``once`` processes what is available, then stops.

    It runs every ``trigger_seconds`` (default: the settings'). It is returned in a list, the
    form `await_first_batch`, `stop_queries` and ``run_speed`` take.

    ``deduplicate`` and ``checkpoint_name`` exist for notebook 06, which deploys a deliberately
    wrong query and then the fixed one: a changed query needs a new checkpoint, which makes
    it a new deployment, and the new deployment replaces the old one's rows whole.
    """
    settings = settings or get_settings()
    warehouse.ensure_schema(settings)
    spark = get_spark(settings)
    checkpoint = f"{settings.checkpoints}/{checkpoint_name}"
    writer = _claim_writer(settings, checkpoint)
    seconds = trigger_seconds or settings.trigger_seconds
    trigger = {"availableNow": True} if once else {"processingTime": f"{seconds} seconds"}
    try:
        query = (
            deduplicate(stream.valid_tweets(spark, settings))
            .writeStream.queryName(f"{checkpoint_name}_{settings.warehouse_schema}")
            .outputMode("append")
            .foreachBatch(SpeedViewSink(settings, checkpoint))
            .option("checkpointLocation", checkpoint)
            .trigger(**trigger)
            .start()
        )
    except BaseException:
        writer.close()
        raise
    _writers[str(query.id)] = (query, writer)
    _checkpoints[str(query.id)] = checkpoint
    _watch(spark, query, settings)
    return [query]


def await_first_batch(queries: list[StreamingQuery], timeout: float = 300.0) -> None:
    """Wait until every query finished its first micro-batch: Spark's JVM, the Python
    workers and the state store are warm, so what is produced next is seen promptly.

    A query that dies meanwhile raises its error here instead of failing later, mid-demo.
    """

    def all_progressed() -> bool:
        for query in queries:
            if not query.isActive and query.lastProgress is None:  # stopped, never progressed
                raise _query_error(query) or RuntimeError(
                    f"speed query {query.name} stopped before its first micro-batch"
                )
        return all(q.lastProgress is not None for q in queries)

    wait_until(
        all_progressed,
        timeout,
        "the speed layer's first micro-batch",
        hint="Its log (logs/spark.log under LAMBDA_DEMO_HOME) says what Spark is doing.",
        interval_seconds=0.2,
    )


def _query_error(query: StreamingQuery) -> Exception | None:
    """The query's failure; one the user can act on becomes the one-line error it is."""
    error = query.exception()
    if error is None:
        return None
    for kind in (DeploymentRetired, CheckpointWithoutRows, MeasureAddedLater):
        _, marker, message = str(error).partition(f"{kind.__name__}: ")
        if marker:
            return kind(message.splitlines()[0])
    if any(name in str(error) for name in STATE_OF_ANOTHER_QUERY):
        checkpoint = _checkpoints.get(str(query.id), "of this speed query")
        return CheckpointOfAnotherQuery(
            f"The speed checkpoint {checkpoint} holds the state of a different query (a changed "
            "one, or one from an earlier version of this project), which Spark cannot resume: "
            "delete that checkpoint directory; the speed layer then rebuilds its view from Kafka."
        )
    return error


@contextlib.contextmanager
def _interruptions_logged_quietly() -> Iterator[None]:
    """While queries are stopped on purpose, py4j's reports of the work that stopped are DEBUG.

    ``StreamingQuery.stop`` interrupts a running micro-batch: the JVM side raises
    ``InterruptedException`` and the Python side of the sink (``foreachBatch``) may fail in
    the middle of a call. py4j logs each as an ERROR with a Java stack trace or a Python
    traceback. The interruption is harmless (Spark never marks that micro-batch done, and the
    sink makes its re-run safe), so these go to the log at DEBUG instead of burying a notebook.
    """
    loggers = [logging.getLogger(name) for name in ("py4j.clientserver", "py4j.java_gateway")]

    def demote(record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True

    for log in loggers:
        log.addFilter(demote)
    try:
        yield
    finally:
        for log in loggers:
            log.removeFilter(demote)


def stop_queries(queries: list[StreamingQuery], settings: Settings | None = None) -> None:
    """Stop the queries and record the speed query's progress reports.

    The listener receives reports asynchronously; recording the recent ones here, in order,
    means that when this returns, ``speed_deployments`` (and a take-over) reflect everything
    processed, and a report the listener had not reached yet is not skipped.
    """
    settings = settings or get_settings()
    with _interruptions_logged_quietly():
        for query in queries:
            if query.isActive:
                query.stop()
    if queries[0].exception() is None:
        for report in queries[0].recentProgress:
            record_progress(settings, json.loads(report.json))
    if (held := _writers.pop(str(queries[0].id), None)) is not None:
        held[1].close()


def run_speed(
    settings: Settings | None = None,
    *,
    once: bool = False,
    trigger_seconds: float | None = None,
    **query_options: Any,
) -> list[StreamingQuery]:
    """``lambda-demo speed``: run until Ctrl-C/SIGTERM (or once), stopping cleanly.

    Returns the stopped queries: their ``recentProgress`` says what each micro-batch of the
    run did (the late-data lesson reads its watermark and its dropped rows there).
    """
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
    return queries
