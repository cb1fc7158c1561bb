"""Benchmark 2: archive and load vs ``psql \\copy``; recompute over 1M tweets vs deduplicated;
the whole batch run over 1M replayed tweets."""

from __future__ import annotations

import os
import subprocess
import tempfile
from datetime import date
from pathlib import Path

from benchmarks.common import isolated, profiled, summary, timed
from benchmarks.ingest import mean_flat_size, producer_performance
from lambda_demo import view
from lambda_demo.batch import archiver, loader, recompute
from lambda_demo.batch.run import pipeline_day
from lambda_demo.clients import warehouse
from lambda_demo.contract import sql_batch_days
from lambda_demo.ingestion import sample
from lambda_demo.ingestion.replay import replay
from lambda_demo.settings import Settings
from lambda_demo.stack.services import _pg_bin

LOAD_TARGET_RATIO = 2.0
RECOMPUTE_TARGET_SECONDS = 3.0
CUTOFF = date(2026, 1, 7)  # the synthetic week below is 2026-01-01 .. 2026-01-07


def psql(settings: Settings, command: str) -> None:
    """Run one psql command against the settings' schema (password via the environment)."""
    ends = settings.endpoints()
    env = {
        **os.environ,
        "PGPASSWORD": ends.warehouse_password or "",
        "PGOPTIONS": f"-c search_path={settings.warehouse_schema}",
    }
    subprocess.run(
        [
            _pg_bin("psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            ends.warehouse_host,
            "-p",
            str(ends.warehouse_port),
            "-U",
            settings.warehouse_user,
            "-d",
            settings.warehouse_db,
            "-c",
            command,
        ],
        env=env,
        check=True,
        capture_output=True,
    )


def sql(settings: Settings, statement: str, *, recompute_memory: bool = False) -> list[tuple]:
    conn = warehouse.connect(settings)
    try:
        with conn, conn.cursor() as cur:
            if recompute_memory:
                recompute.use_work_mem(cur)
            cur.execute(statement)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def copy_in_seconds(settings: Settings) -> float:
    """The load's baseline: the very same rows of ``raw_tweets``, exported to CSV, then
    written by psql's ``\\copy`` into an empty twin table; returns the seconds of that copy."""
    csv = Path(tempfile.mkdtemp(prefix="lambda-demo-bench-copy-")) / "raw_tweets.csv"
    try:
        psql(settings, f"\\copy raw_tweets TO '{csv}' WITH (FORMAT csv)")
        sql(settings, "CREATE TABLE copy_twin (LIKE raw_tweets)")
        seconds, _ = timed(
            lambda: psql(settings, f"\\copy copy_twin FROM '{csv}' WITH (FORMAT csv)")
        )
        sql(settings, "DROP TABLE copy_twin")
        return seconds
    finally:
        csv.unlink(missing_ok=True)
        csv.parent.rmdir()


def archive_and_load(home: Path, topic: str, *, repeats: int) -> dict:
    """Archive the benchmark topic into a fresh bucket and load it into a fresh schema."""
    archive_rates, load_rates, copy_rates, ratios = [], [], [], []
    for _ in range(repeats):
        settings = isolated(home, topic=topic, dlq_topic=f"{topic}.dlq")
        seconds, archived = timed(lambda s=settings: archiver.archive(s, progress=False))
        archive_rates.append(archived.records_archived / seconds)
        load_seconds, loaded = timed(lambda s=settings: loader.load(s, progress=False))
        load_rates.append(loaded.rows_loaded / load_seconds)
        copy_seconds = copy_in_seconds(settings)
        copy_rates.append(loaded.rows_loaded / copy_seconds)
        ratios.append(load_seconds / copy_seconds)
    # Where the time goes: one more archive + load into a fresh bucket and schema, profiled.
    fresh = isolated(home, topic=topic, dlq_topic=f"{topic}.dlq")
    profiles = {
        "archive": profiled(lambda: archiver.archive(fresh, progress=False)),
        "load": profiled(lambda: loader.load(fresh, progress=False)),
    }
    ratio = summary(ratios)
    return {
        "records": archived.records_archived,
        "rows": loaded.rows_loaded,
        "archive_records_per_s": summary(archive_rates),
        "load_rows_per_s": summary(load_rates),
        "psql_copy_rows_per_s": summary(copy_rates),
        "load_time_over_copy_time": ratio,
        "target_load_over_copy": LOAD_TARGET_RATIO,
        "load_target_met": ratio["median"] <= LOAD_TARGET_RATIO,
        "profiles": profiles,
    }


SYNTHETIC_ROWS = """
INSERT INTO raw_tweets (tweet_id, ingest_ts, ingest_day, kafka_partition, kafka_offset,
    created_at, author_id, location, followers_count, like_count, retweet_count, lang,
    object_key)
SELECT t.id::text, t.ts, (t.ts AT TIME ZONE 'UTC')::date, g %% 3, g, t.ts::text,
       (g %% 50000)::text, 'loc-' || (g * 7919 %% 2000), g * 31 %% 100000, g %% 50, g %% 7, 'en',
       'synthetic'
FROM generate_series(1::bigint, %(rows)s::bigint) AS g,
LATERAL (SELECT
    1000000000000 + CASE WHEN g <= %(tweets)s THEN g ELSE (g - %(tweets)s) * 97 END AS id,
    TIMESTAMPTZ '2026-01-01 00:00:00+00'
        + ((CASE WHEN g <= %(tweets)s THEN g ELSE (g - %(tweets)s) * 97 END) - 1)
          * (INTERVAL '7 days' / %(tweets)s)
        + CASE WHEN g > %(tweets)s THEN INTERVAL '5 minutes' ELSE INTERVAL '0' END AS ts
) AS t
"""


def recompute_1m(home: Path, *, tweets: int, repeats: int) -> tuple[dict, Settings]:
    """Recompute the batch view over ``tweets`` distinct tweets (+1% duplicate deliveries)."""
    settings = isolated(home)
    conn = warehouse.connect(settings)
    with conn, conn.cursor() as cur:
        cur.execute(SYNTHETIC_ROWS, {"rows": tweets + tweets // 100, "tweets": tweets})
    conn.close()
    sql(settings, "ANALYZE raw_tweets")
    # The baseline: the same aggregate over a table that holds each tweet's first delivery.
    sql(
        settings,
        "CREATE TABLE deduplicated AS SELECT DISTINCT ON (tweet_id) * FROM raw_tweets "
        f"ORDER BY tweet_id, {recompute.RAW_DELIVERY.sql_order_by()}",
    )
    sql(settings, "ANALYZE deduplicated")
    cutoff = f"DATE '{CUTOFF.isoformat()}'"
    plain = (
        f"SELECT {view.KEY}, {view.sql_select_list()} FROM deduplicated "
        f"WHERE {sql_batch_days('ingest_day', cutoff)} GROUP BY {view.KEY}"
    )
    ours, baseline = [], []
    for _ in range(repeats):
        seconds, result = timed(lambda: recompute.recompute(settings, cutoff=CUTOFF))
        ours.append(seconds)
        # The same sort memory as the recompute's transaction: only the deduplication differs.
        baseline.append(timed(lambda: sql(settings, plain, recompute_memory=True))[0])
    best = summary(ours)
    rows = sql(settings, "SELECT COUNT(*) FROM raw_tweets")[0][0]
    # The SQL "profile": the executed plan of the recompute's INSERT, rolled back.
    conn = warehouse.connect(settings)
    try:
        with conn.cursor() as cur:
            recompute.use_work_mem(cur)
            cur.execute(
                "EXPLAIN (ANALYZE, BUFFERS) " + recompute.batch_view_sql(),
                {"run_id": "explain", "cutoff": CUTOFF},
            )
            plan = "\n".join(line for (line,) in cur.fetchall())
            cur.execute(
                "SELECT current_setting('work_mem'), datcollate FROM pg_database "
                "WHERE datname = current_database()"
            )
            work_mem, collation = cur.fetchone()
        conn.rollback()
    finally:
        conn.close()
    return {
        "tweets": tweets,
        "rows": rows,
        "tweets_in_view": result.tweets,
        "recompute_seconds": best,
        "deduplicated_sql_seconds": summary(baseline),
        "ratio_vs_deduplicated": best["median"] / summary(baseline)["median"],
        "target_seconds": RECOMPUTE_TARGET_SECONDS,
        "target_met": best["median"] < RECOMPUTE_TARGET_SECONDS,
        "plan": plan,
        "work_mem": work_mem,
        "collation": collation,
    }, settings


BATCH_TARGET_SECONDS = 20.0


def batch_1m(home: Path, *, tweets: int = 1_000_000) -> dict:
    """Issue 20's batch figure: archive + load + recompute over ``tweets`` replayed tweets, the
    load beside ``psql \\copy`` of the same rows; and the replay that filled the topic beside
    ``ProducerPerformance`` sending as many records of the same mean size to the same broker.
    """
    settings = isolated(home)
    path = home / f"batch-{tweets}.jsonl.gz"
    sample.write(path, tweets=tweets, days=7, seed=1)
    replay_s, counts = timed(lambda: replay([path], settings=settings, progress=False))
    size = mean_flat_size(path, limit=10_000)
    tool_rate = producer_performance(home, counts.produced, size)
    archive_s, archived = timed(lambda: archiver.archive(settings, progress=False))
    load_s, loaded = timed(lambda: loader.load(settings, progress=False))
    cutoff = pipeline_day(settings)
    recompute_s, result = timed(lambda: recompute.recompute(settings, cutoff=cutoff))
    copy_s = copy_in_seconds(settings)
    total = archive_s + load_s + recompute_s
    replay_rate = counts.read / replay_s
    return {
        "tweets": tweets,
        "lines_read": counts.read,
        "records": archived.records_archived,
        "objects": archived.objects_written,
        "rows": loaded.rows_loaded,
        "quarantined": loaded.quarantined,
        "tweets_in_view": result.tweets,
        "mean_flat_record_bytes": size,
        "replay_seconds": replay_s,
        "replay_tweets_per_s": replay_rate,
        "producer_performance_records_per_s": tool_rate,
        "replay_over_producer_performance": replay_rate / tool_rate,
        "archive_seconds": archive_s,
        "load_seconds": load_s,
        "recompute_seconds": recompute_s,
        "batch_seconds": total,
        "copy_seconds": copy_s,
        "load_time_over_copy_time": load_s / copy_s,
        "target_batch_seconds": BATCH_TARGET_SECONDS,
        "batch_target_met": total <= BATCH_TARGET_SECONDS,
        "target_load_over_copy": LOAD_TARGET_RATIO,
        "load_target_met": load_s / copy_s <= LOAD_TARGET_RATIO,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
