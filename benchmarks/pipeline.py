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

from benchmarks.common import MemorySampler, du_bytes, isolated, timed
from lambda_demo import sample, speed
from lambda_demo.batch.run import run_batch
from lambda_demo.check import check
from lambda_demo.replay import replay
from lambda_demo.spark import get_spark
from lambda_demo.warehouse import connect

DEMO_TARGET_SECONDS = 300.0
TABLES = ("raw_tweets", "loaded_objects", "quarantine", "batch_view", "speed_view")


def _speed_once(settings) -> None:
    for query in speed.start_queries(settings, once=True):
        query.awaitTermination()


def scale_run(home: Path, tweets: int) -> dict:
    """Sample -> replay (speedup 0) -> speed once -> batch (cutoff = last day) -> check.

    Spark is started before the clock runs, as in 3a: ``speed_once`` times the queries alone.
    """
    settings = isolated(home)
    path = home / f"sample-{tweets}.jsonl.gz"
    stages: dict[str, dict] = {}
    write_s, lines = timed(lambda: sample.write(path, tweets=tweets, days=7, seed=1))
    stages["sample"] = {"seconds": write_s, "per_s": lines["lines"] / write_s}
    steps = {
        "replay": lambda: replay([path], settings=settings, progress=False),
        "speed_once": lambda: _speed_once(settings),
        "batch": lambda: run_batch(settings, progress=False),
        "check": lambda: check(settings),
    }
    get_spark(settings)  # the JVM's start is not the speed layer's work (3a does the same)
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
        "batch": {k: str(v) for k, v in vars(outcome["batch"]).items()},
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
        "target_met": done.returncode == 0 and seconds < DEMO_TARGET_SECONDS,
    }
