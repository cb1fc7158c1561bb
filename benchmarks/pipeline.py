"""Benchmarks 5 and 6: the whole pipeline at a given size (stages, memory, disk, check),
and the wall time of ``lambda-demo demo`` in a fresh home."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.batch import copy_in_seconds
from benchmarks.common import MemorySampler, du_bytes, isolated, timed
from benchmarks.ingest import mean_flat_size, producer_performance
from lambda_demo.batch import archiver, loader, recompute
from lambda_demo.batch.archiver import ArchiveResult
from lambda_demo.batch.run import pipeline_day
from lambda_demo.clients import kafka_io
from lambda_demo.clients.spark import get_spark
from lambda_demo.clients.warehouse import connect
from lambda_demo.ingestion import sample
from lambda_demo.ingestion.replay import replay
from lambda_demo.serving.check import check
from lambda_demo.settings import Settings
from lambda_demo.speed.run import start_queries

DEMO_TARGET_SECONDS = 60.0  # issue 20: the whole loop while a workshop watches
TABLES = ("raw_tweets", "loaded_objects", "quarantine", "batch_view", "speed_view")


def _speed_once(settings: Settings) -> None:
    for query in start_queries(settings, once=True):
        query.awaitTermination()


def scale_run(home: Path, tweets: int) -> dict:
    """Sample -> replay (speedup 0) -> speed once -> archive -> load -> recompute (cutoff =
    the last day) -> check, then each stage's baseline on the same data.

    The batch stages are ``run_batch``'s three steps, timed one by one. Spark is started
    before the clock runs, as in 3a: ``speed_once`` times the queries alone.
    """
    settings = isolated(home)
    path = home / f"sample-{tweets}.jsonl.gz"
    stages: dict[str, dict] = {}
    write_s, lines = timed(lambda: sample.write(path, tweets=tweets, days=7, seed=1))
    stages["sample"] = {"seconds": write_s, "per_s": lines["lines"] / write_s}
    steps = {
        "replay": lambda: replay([path], settings=settings, progress=False),
        "speed_once": lambda: _speed_once(settings),
        "archive": lambda: archiver.archive(settings, progress=False),
        "load": lambda: loader.load(settings, progress=False),
        "recompute": lambda: recompute.recompute(settings, cutoff=pipeline_day(settings)),
        "check": lambda: check(settings),
    }
    get_spark(settings)
    outcome = {}
    for name, step in steps.items():
        with MemorySampler(settings) as memory:
            seconds, outcome[name] = timed(step)
        stages[name] = {
            "seconds": seconds,
            "per_s": lines["lines"] / seconds,
            "peak_rss_mb": memory.peaks_mb,
            "python_start_mb": memory.python_start_mb,
        }
    result = outcome["check"]
    conn = connect(settings)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT " + ", ".join(f"pg_total_relation_size('{t}')" for t in TABLES))
        sizes = dict(zip(TABLES, cur.fetchone(), strict=True))
    conn.close()
    per_million = 1_000_000 / tweets / 2**20
    return {
        "tweets": tweets,
        "lines": lines,
        "stages": stages,
        "baselines": _baselines(home, settings, path, stages, outcome["archive"]),
        "batch": {
            **{k: str(v) for k, v in vars(outcome["archive"]).items()},
            **{k: str(v) for k, v in vars(outcome["load"]).items()},
            **{k: str(v) for k, v in vars(outcome["recompute"]).items()},
        },
        "check_ok": result.ok,
        "check_mismatches": len(result.mismatches),
        "check_tweets": result.tweets,
        "disk_mb_per_million_tweets": {
            "kafka": du_bytes(home / "kafka", settings.topic) * per_million,
            "s3": du_bytes(home / "s3", settings.s3_bucket) * per_million,
            "warehouse": sum(sizes.values()) * per_million,
            "warehouse_tables": {t: v * per_million for t, v in sizes.items()},
        },
    }


def _baselines(
    home: Path, settings: Settings, sample_path: Path, stages: dict, archived: ArchiveResult
) -> dict:
    """Each stage's baseline on the same data, right after it: the tool's own rate.

    replay vs ``ProducerPerformance`` (as many records, the same mean size); speed vs Spark's
    plain batch read of the topic; load vs ``psql \\copy`` of the rows it loaded.
    """
    count = archived.records_archived
    tool_rate = producer_performance(home, count, mean_flat_size(sample_path, limit=10_000))
    reader = (
        get_spark(settings)
        .read.format("kafka")
        .option("kafka.bootstrap.servers", kafka_io.bootstrap(settings))
        .option("subscribe", settings.topic)
        .option("startingOffsets", "earliest")
    )
    read_seconds, read = timed(lambda: reader.load().count())
    copy_seconds = copy_in_seconds(settings)
    return {
        "producer_performance_records_per_s": tool_rate,
        "replay_over_producer_performance": stages["replay"]["per_s"] / tool_rate,
        "spark_read_records_per_s": read / read_seconds,
        "speed_over_spark_read": (count / stages["speed_once"]["seconds"]) / (read / read_seconds),
        "copy_seconds": copy_seconds,
        "load_time_over_copy_time": stages["load"]["seconds"] / copy_seconds,
    }


def demo_wall_time() -> dict:
    """``lambda-demo demo`` as a learner runs it: a subprocess in a fresh home."""
    home = tempfile.mkdtemp(prefix="lambda-demo-bench-demo-")
    env = {**os.environ, "LAMBDA_DEMO_HOME": home, "CI": "1"}
    cli = [sys.executable, "-m", "lambda_demo.cli"]
    when = datetime.now(UTC).isoformat(timespec="minutes")
    load = [round(x, 1) for x in os.getloadavg()]
    started = time.perf_counter()
    done = subprocess.run([*cli, "demo"], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    subprocess.run([*cli, "stack", "reset"], env=env, capture_output=True)
    last = [line for line in done.stdout.splitlines() if line.startswith("check:")]
    errors = [line for line in done.stderr.splitlines() if "Error" in line or "Exception" in line]
    return {
        "started": when,
        "load_average_before": load,
        "seconds": seconds,
        "returncode": done.returncode,
        "check": last[-1] if last else "no check line",
        "errors": errors[:8],
        "target_seconds": DEMO_TARGET_SECONDS,
        "ratio_vs_target": seconds / DEMO_TARGET_SECONDS,
        "target_met": done.returncode == 0 and seconds <= DEMO_TARGET_SECONDS,
    }
