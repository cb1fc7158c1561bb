"""``lambda-demo status``: where the data is, layer by layer, from Kafka to the serving view.

Each figure is read from the layer that owns it, never derived from another layer's, so a
learner can watch the hand-over: records pile up in Kafka, the archive and the warehouse
catch up at each batch run, the batch view takes over the days before the cutoff, and the
speed layer keeps only the days from the cutoff on (``speed.days``), with a bounded state
(``speed.state_rows``) and a small lag (``speed.lag_records`` and ``speed.lag_seconds``, see
`serving_lag`).

Usage::

    lambda-demo status           # in words
    lambda-demo status --json    # one JSON object, for scripts and notebooks
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any

import psycopg2
from botocore.exceptions import BotoCoreError
from kafka import KafkaConsumer
from kafka.errors import KafkaError

from lambda_demo.batch.archiver import list_archived
from lambda_demo.clients import kafka_io, storage, warehouse
from lambda_demo.contract import INGEST_DAY_ZONE, ingest_time
from lambda_demo.errors import StackError, explain
from lambda_demo.ingestion.clock import format_utc
from lambda_demo.settings import Settings, get_settings


def topic_offsets(
    settings: Settings, topic: str, *, consumer: KafkaConsumer | None = None
) -> dict[str, tuple[int, int]]:
    """``{partition: (first offset, end offset)}`` of one topic (empty if it does not exist)."""
    offsets = kafka_io.partition_offsets(settings, topic, consumer=consumer)
    return {str(partition): span for partition, span in offsets.items()}


# The status queries (``lambda-demo sql`` prints them): plain SQL both dialects speak.
SPEED_FIGURES = (
    "SELECT d.deployment, d.state_rows, d.late_rows, d.watermark, s.ingest_day "
    "FROM speed_deployments d "
    "LEFT JOIN (SELECT DISTINCT ingest_day FROM speed_serving) s ON 1 = 1 "
    "WHERE d.serving ORDER BY s.ingest_day"
)
SERVING_PROGRESS = (
    "SELECT (SELECT end_offsets FROM speed_deployments WHERE serving), "
    "(SELECT cutoff_day FROM batch_meta)"
)
WAREHOUSE_ROWS = "SELECT (SELECT COUNT(*) FROM raw_tweets), (SELECT COUNT(*) FROM loaded_objects)"
BATCH_FIGURES = (
    "SELECT (SELECT cutoff_day FROM batch_meta), "
    "COALESCE(SUM(tweet_count), 0), COUNT(*) FROM batch_serving"
)
SERVING_FIGURES = "SELECT COALESCE(SUM(tweet_count), 0), COUNT(*) FROM serving_view"


def _one(query: str, settings: Settings) -> tuple:
    """The single row of an aggregate query."""
    return next(warehouse.fetch_frame(query, settings=settings).itertuples(index=False))


def speed_figures(settings: Settings) -> dict[str, Any]:
    """The serving speed deployment: its days, state rows, late rows and watermark.

    The figures are None until the deployment has reported progress (no query has run yet).
    One row per day the deployment serves (Redshift has no arrays), in one snapshot.
    """
    frame = warehouse.fetch_frame(SPEED_FIGURES, settings=settings)
    # None, not NaN/NaT, for what a deployment has not reported yet.
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    row = rows[0] if rows else dict.fromkeys(frame.columns)
    return {
        "deployment": row["deployment"],
        "days": [r["ingest_day"].isoformat() for r in rows if r["ingest_day"] is not None],
        "state_rows": None if row["state_rows"] is None else int(row["state_rows"]),
        "late_rows": None if row["late_rows"] is None else int(row["late_rows"]),
        "watermark": None if row["watermark"] is None else format_utc(row["watermark"]),
    }


@dataclass(frozen=True)
class Lag:
    """How far the serving view is behind Kafka (see `serving_lag`)."""

    records: int
    """Records in Kafka the serving speed deployment has not processed yet."""
    seconds: float | None
    """``now - reflected``, in the stream's own seconds (simulated ones under a replay); None
    while Kafka holds no record or the serving view reflects none."""
    now: datetime | None
    """The stream's now: the ingest time of the newest record in Kafka."""
    reflected: datetime | None
    """The ingest time of the newest record the serving view reflects."""


def serving_lag(settings: Settings, *, tweets: dict[str, tuple[int, int]] | None = None) -> Lag:
    """How far the serving view is behind Kafka, in records and in seconds of stream time.

    **Records behind**: per partition, Kafka's end offset minus the offset the serving speed
    deployment has processed up to (its progress report, recorded after the micro-batch's
    rows were committed).

    **Seconds behind**: the stream's now, the ingest time of the newest record in Kafka,
    minus the ingest time of the newest record the serving view reflects: the last record
    the serving deployment processed, or the batch cutoff's midnight if that is later (the
    batch view holds every day before it). Under a replay the ingest times are the simulated
    clock's, so these are simulated seconds: divide by the speed-up for wall seconds. Both
    instants are read from Kafka at the offsets that delimit the records behind, so the two
    figures describe the same records; Spark's own progress report is no help here (its
    ``eventTime.max`` covers one of the speed layer's per-partition watermarks only).

    Kafka's offsets come first (``tweets``, `topic_offsets` read by the caller if it has
    them): a query still running may have passed them by the time the warehouse is read,
    which counts as zero behind, never as a negative number.
    """
    consumer = kafka_io.consumer(settings, client_id="lambda-demo-status")
    with contextlib.closing(consumer):
        if tweets is None:
            tweets = topic_offsets(settings, settings.topic, consumer=consumer)
        end_offsets, cutoff = _one(SERVING_PROGRESS, settings)
        processed = json.loads(end_offsets) if end_offsets else {}
        ends = {partition: end for partition, (_, end) in tweets.items()}
        now = _newest_before(settings, tweets, ends, consumer)
        processed_up_to = _newest_before(settings, tweets, processed, consumer)
    records = sum(
        max(0, end - max(begin, processed.get(partition, begin)))
        for partition, (begin, end) in tweets.items()
    )
    batch_up_to = None if cutoff is None else datetime.combine(cutoff, time(), INGEST_DAY_ZONE)
    reflected = max((t for t in (processed_up_to, batch_up_to) if t is not None), default=None)
    seconds = None
    if now is not None and reflected is not None:
        seconds = max(0.0, (now - reflected).total_seconds())
    return Lag(records=records, seconds=seconds, now=now, reflected=reflected)


def _newest_before(
    settings: Settings,
    tweets: dict[str, tuple[int, int]],
    offsets: dict[str, int],
    consumer: KafkaConsumer,
) -> datetime | None:
    """The newest ingest time of the records just before ``offsets`` ({partition: offset}).

    One record per partition, the one at ``offset - 1``: ingest times only grow along a
    partition (the replay's clock and a live stream's both move forward). A timestamp no
    tweet can have (``contract.ingest_time``) is no time to measure from: skipped.
    """
    newest = None
    for partition, offset in offsets.items():
        begin = tweets[partition][0] if partition in tweets else 0
        start = max(begin, offset - 1)
        last = kafka_io.read_range(
            settings, settings.topic, int(partition), start, offset, consumer=consumer
        )
        for record in last:
            moment = ingest_time(record.timestamp)
            if moment is not None and (newest is None or moment > newest):
                newest = moment
    return newest


def status(settings: Settings | None = None) -> dict[str, Any]:
    """Every layer's figures as one JSON-ready dict (see the module docstring)."""
    settings = settings or get_settings()
    try:
        return _figures(settings)
    except (psycopg2.OperationalError, KafkaError, BotoCoreError) as exc:
        # Which service, at which address, and what to do (see lambda_demo.errors.explain).
        raise explain(exc, settings) or StackError(str(exc)) from exc


def _figures(settings: Settings) -> dict[str, Any]:
    warehouse.ensure_schema(settings)
    tweets = topic_offsets(settings, settings.topic)
    dlq = topic_offsets(settings, settings.dlq_topic)
    archived = list_archived(settings, client=storage.s3_client(settings))

    raw_rows, loaded = _one(WAREHOUSE_ROWS, settings)
    cutoff, batch_tweets, batch_locations = _one(BATCH_FIGURES, settings)
    serving_tweets, serving_locations = _one(SERVING_FIGURES, settings)

    speed = speed_figures(settings)
    lag = serving_lag(settings, tweets=tweets)
    return {
        "kafka": {
            "records": sum(end - begin for begin, end in tweets.values()),
            "dead_lettered": sum(end - begin for begin, end in dlq.values()),
        },
        "archive": {
            "objects": len(archived),
            "records": sum(obj.end - obj.start + 1 for obj in archived),
        },
        "warehouse": {"raw_rows": int(raw_rows), "loaded_objects": int(loaded)},
        "batch": {
            "cutoff": cutoff.isoformat() if cutoff is not None else None,
            "tweets": int(batch_tweets),
            "locations": int(batch_locations),
        },
        "speed": {
            **speed,
            "lag_records": lag.records,
            "lag_seconds": lag.seconds,
            "newest_ingest": None if lag.reflected is None else format_utc(lag.reflected),
            "newest_in_kafka": None if lag.now is None else format_utc(lag.now),
        },
        "serving": {"tweets": int(serving_tweets), "locations": int(serving_locations)},
    }


def render(figures: dict[str, Any]) -> str:
    """The figures in words, one line per layer (two for the speed layer and its lag), in the
    order the data flows."""
    kafka, archive, wh = figures["kafka"], figures["archive"], figures["warehouse"]
    batch, speed, serving = figures["batch"], figures["speed"], figures["serving"]
    days = ", ".join(speed["days"]) or "none"
    state = "no query has run" if speed["state_rows"] is None else f"{speed['state_rows']:,}"
    cutoff = batch["cutoff"] or "no batch run yet"
    # Seconds of stream time: under a replay, simulated seconds.
    behind = "? s" if speed["lag_seconds"] is None else f"{speed['lag_seconds']:,.1f} s"
    return "\n".join(
        [
            f"kafka      {kafka['records']:,} records in the topic, "
            f"{kafka['dead_lettered']:,} dead-lettered",
            f"archive    {archive['records']:,} records in {archive['objects']:,} S3 objects",
            f"warehouse  {wh['raw_rows']:,} raw rows from {wh['loaded_objects']:,} objects",
            f"batch      cutoff {cutoff}: {batch['tweets']:,} tweets, "
            f"{batch['locations']:,} locations",
            f"speed      days {days}; {speed['lag_records']:,} records and {behind} behind Kafka; "
            f"state rows {state}; watermark {speed['watermark'] or 'none'}",
            f"           newest ingest time served {speed['newest_ingest'] or 'none'}, "
            f"in Kafka {speed['newest_in_kafka'] or 'none'}",
            f"serving    {serving['tweets']:,} tweets, {serving['locations']:,} locations",
        ]
    )
