"""``lambda-demo status``: where the data is, layer by layer, from Kafka to the serving view.

Each figure is read from the layer that owns it, never derived from another layer's, so a
learner can watch the hand-over: records pile up in Kafka, the archive and the warehouse
catch up at each batch run, the batch view takes over the days before the cutoff, and the
speed layer keeps only the days from the cutoff on (``speed.days``), with a bounded state
(``speed.state_rows``) and a small lag (``speed.lag_records``).

Usage::

    lambda-demo status           # in words
    lambda-demo status --json    # one JSON object, for scripts and notebooks
"""

from __future__ import annotations

import json
from typing import Any

import psycopg2
from botocore.exceptions import BotoCoreError
from kafka.errors import KafkaError

from lambda_demo.batch.archiver import list_archived
from lambda_demo.clients import kafka_io, storage, warehouse
from lambda_demo.errors import StackError, explain
from lambda_demo.ingestion.clock import format_utc
from lambda_demo.settings import Settings, get_settings


def topic_offsets(settings: Settings, topic: str) -> dict[str, tuple[int, int]]:
    """``{partition: (first offset, end offset)}`` of one topic (empty if it does not exist)."""
    offsets = kafka_io.partition_offsets(settings, topic)
    return {str(partition): span for partition, span in offsets.items()}


def _one(query: str, settings: Settings) -> tuple:
    """The single row of an aggregate query."""
    return next(warehouse.fetch_frame(query, settings=settings).itertuples(index=False))


def speed_figures(settings: Settings) -> dict[str, Any]:
    """The serving speed deployment: its days, state rows, late rows, watermark and offsets.

    ``end_offsets`` is ``{partition: next offset}`` the deployment has processed; the other
    figures are None until the deployment has reported progress (no query has run yet).
    """
    frame = warehouse.fetch_frame(
        "SELECT d.deployment, d.end_offsets, d.state_rows, d.late_rows, d.watermark, "
        "ARRAY(SELECT DISTINCT ingest_day FROM speed_serving ORDER BY 1) AS days "
        "FROM speed_deployments d WHERE d.serving",
        settings=settings,
    )
    # None, not NaN/NaT, for what a deployment has not reported yet.
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    row = rows[0] if rows else dict.fromkeys(frame.columns)
    return {
        "deployment": row["deployment"],
        "days": [day.isoformat() for day in row["days"] or []],
        "state_rows": None if row["state_rows"] is None else int(row["state_rows"]),
        "late_rows": None if row["late_rows"] is None else int(row["late_rows"]),
        "watermark": None if row["watermark"] is None else format_utc(row["watermark"]),
        "end_offsets": json.loads(row["end_offsets"]) if row["end_offsets"] else {},
    }


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

    raw_rows, loaded = _one(
        "SELECT (SELECT COUNT(*) FROM raw_tweets), (SELECT COUNT(*) FROM loaded_objects)",
        settings,
    )
    cutoff, batch_tweets, batch_locations = _one(
        "SELECT (SELECT cutoff_day FROM batch_meta), "
        "COALESCE(SUM(tweet_count), 0), COUNT(*) FROM batch_serving",
        settings,
    )
    serving_tweets, serving_locations = _one(
        "SELECT COALESCE(SUM(tweet_count), 0), COUNT(*) FROM serving_view", settings
    )

    speed = speed_figures(settings)
    processed = speed.pop("end_offsets")
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
            # Kafka is read first: a query still running may be ahead of `end` by now.
            "lag_records": sum(
                max(0, end - max(begin, processed.get(partition, begin)))
                for partition, (begin, end) in tweets.items()
            ),
        },
        "serving": {"tweets": int(serving_tweets), "locations": int(serving_locations)},
    }


def render(figures: dict[str, Any]) -> str:
    """The figures in words, one line per layer, in the order the data flows."""
    kafka, archive, wh = figures["kafka"], figures["archive"], figures["warehouse"]
    batch, speed, serving = figures["batch"], figures["speed"], figures["serving"]
    days = ", ".join(speed["days"]) or "none"
    state = "no query has run" if speed["state_rows"] is None else f"{speed['state_rows']:,}"
    cutoff = batch["cutoff"] or "no batch run yet"
    return "\n".join(
        [
            f"kafka      {kafka['records']:,} records in the topic, "
            f"{kafka['dead_lettered']:,} dead-lettered",
            f"archive    {archive['records']:,} records in {archive['objects']:,} S3 objects",
            f"warehouse  {wh['raw_rows']:,} raw rows from {wh['loaded_objects']:,} objects",
            f"batch      cutoff {cutoff}: {batch['tweets']:,} tweets, "
            f"{batch['locations']:,} locations",
            f"speed      days {days}; {speed['lag_records']:,} records behind; "
            f"state rows {state}; watermark {speed['watermark'] or 'none'}",
            f"serving    {serving['tweets']:,} tweets, {serving['locations']:,} locations",
        ]
    )
