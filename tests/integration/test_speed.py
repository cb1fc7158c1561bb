"""The speed layer on real Kafka + Spark + PostgreSQL: exact, restartable, garbage-proof."""

from __future__ import annotations

import json
import random
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from helpers import (
    DAY0,
    Delivery,
    as_dict,
    cli_command,
    committed_speed_batch,
    expected_by_day,
    expected_view,
    planned_speed_offsets,
    produce,
    query,
    run_cli,
    speed_by_day,
    topic_size,
    tweet,
    wait_until,
)

from lambda_demo.batch.recompute import CutoffMovedBack
from lambda_demo.batch.run import run_batch
from lambda_demo.clients import warehouse
from lambda_demo.serving import reads
from lambda_demo.serving.check import check
from lambda_demo.settings import Settings
from lambda_demo.speed.run import run_speed, start_queries, stop_queries
from lambda_demo.speed.sink import DeploymentRetired, record_progress
from lambda_demo.status import status
from lambda_demo.tutorial.recovery import buggy_deduplicate

pytestmark = pytest.mark.integration

LOCATIONS = ["London", "Zürich 🇨🇭", 'Paris; "FR"', "a,b\nc", "(unknown)", "東京"]


def _stream(
    seed: int, n: int, *, start_id: int = 1, days: int = 2, start_day: int = 0
) -> list[Delivery]:
    """n tweets over ``days`` days with ~10% duplicates a few minutes later and some garbage."""
    rng = random.Random(seed)
    out: list[Delivery] = []
    ts = DAY0 + timedelta(days=start_day, hours=20)
    step = timedelta(days=days) / n
    for i in range(n):
        ts += step
        t = tweet(
            start_id + i,
            rng.choice(LOCATIONS),
            followers=rng.randint(0, 10**9),
            likes=rng.choice([0, 0, 3, 10**6]),
            retweets=rng.randint(0, 5),
        )
        out.append(Delivery(ts, t))
        if rng.random() < 0.1:
            out.append(Delivery(ts + timedelta(minutes=rng.randint(1, 9)), t))
        if rng.random() < 0.03:
            out.append(Delivery(ts, garbage=rng.choice([b"\xff\xfe", b"{", b'{"v":1}', b"[]"])))
    out.sort(key=lambda d: d.ts)
    return out


def test_speed_view_equals_recomputation(settings: Settings, spark) -> None:
    deliveries = _stream(1, 400)
    produce(settings, deliveries)
    run_speed(settings, once=True)
    assert speed_by_day(settings) == expected_by_day(deliveries)
    assert as_dict(reads.serving_view(settings)) == expected_view(deliveries)


def test_duplicate_across_midnight_counts_once_on_its_first_day(settings: Settings, spark) -> None:
    t = tweet(42, "Lisbon", followers=7)
    first = Delivery(DAY0 + timedelta(hours=23, minutes=59), t)
    again = Delivery(DAY0 + timedelta(days=1, minutes=1), t)
    late_again = Delivery(DAY0 + timedelta(days=1, hours=20), t)
    produce(settings, [first])
    run_speed(settings, once=True)
    produce(settings, [again, late_again])
    run_speed(settings, once=True)
    assert speed_by_day(settings) == {(DAY0.date(), "Lisbon"): [1, 7, 0, 0]}


def test_garbage_is_quarantined_and_changes_nothing(settings: Settings, spark) -> None:
    deliveries = _stream(2, 100)
    garbage = [b"\x00\x01", b"not json", b'{"v":1,"tweet_id":"1.5"}', b'{"v":2}', b"[1]"]
    produce(settings, deliveries)
    produce(settings, [Delivery(DAY0 + timedelta(days=2), garbage=g) for g in garbage])
    run_speed(settings, once=True)
    assert speed_by_day(settings) == expected_by_day(deliveries)
    rows = query(settings, "SELECT reason, raw_value FROM quarantine WHERE layer = 'speed'")
    quarantined = {bytes(raw) for _, raw in rows}
    assert set(garbage) <= quarantined
    assert all(reason for reason, _ in rows)


def test_killed_mid_stream_restarts_exact(settings: Settings, cli_env: dict[str, str]) -> None:
    """SIGKILL the running speed layer while it works, restart from its checkpoint."""
    first = _stream(3, 300)
    produce(settings, first)
    process = subprocess.Popen(
        cli_command("speed", "--trigger-seconds", "0.5"),
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def running(condition: bool) -> bool:
        assert process.poll() is None, "the speed layer exited before it was killed"
        return condition

    try:
        wait_until(
            lambda: running(committed_speed_batch(settings) >= 0),
            180,
            "the speed layer's first commit",
            interval=0.5,
        )
        # Ingest time moves on, as it does on a real pipeline clock (the speed layer drops
        # records more than WATERMARK older than the newest it has seen).
        second = _stream(4, 300, start_id=10_000, start_day=2)
        produce(settings, second)
        end = topic_size(settings)
        # Spark has planned the micro-batch that reads `second` (its offsets are in the
        # checkpoint): the kill lands while that batch runs, or right after it.
        wait_until(
            lambda: running(planned_speed_offsets(settings) >= end),
            120,
            "a micro-batch over the second stream to start",
            interval=0.05,
        )
    finally:
        process.kill()  # SIGKILL, unless the process is already gone
        process.wait()
    # Spark's Python workers outlive a SIGKILLed driver briefly; the checkpoint is what counts.
    run_speed(settings, once=True)
    assert speed_by_day(settings) == expected_by_day(first + second)


def test_cli_keeps_spark_console_output_in_its_log(
    settings: Settings, cli_env: dict[str, str]
) -> None:
    """`lambda-demo speed` prints one line of its own; the JVM's output goes to spark.log."""
    deliveries = _stream(1, 50)
    produce(settings, deliveries)
    warehouse.ensure_schema(settings)
    log = settings.home / "logs" / "spark.log"
    before = log.stat().st_size if log.exists() else 0
    done = run_cli(cli_env, "speed", "--once")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        f"speed layer running until the topic is drained; Spark's own log: {log}"
    ]
    jvm_markers = ("WARN ", "log4j", ":: resolving", "artifacts copied", "Ivy")
    assert not [line for line in done.stderr.splitlines() if any(m in line for m in jvm_markers)]
    assert log.stat().st_size > before  # the chatter went somewhere a reader can look
    assert speed_by_day(settings) == expected_by_day(deliveries)


def test_spark_start_failure_shows_the_jvms_reason(
    settings: Settings, cli_env: dict[str, str]
) -> None:
    """The JVM's reason lives in spark.log, not in pyspark's "gateway exited": show it."""
    env = {**cli_env, "LAMBDA_DEMO_SPARK_MASTER": "nonsense://nowhere"}
    done = run_cli(env, "speed", "--once", timeout=300)
    assert done.returncode == 2
    assert "Spark did not start" in done.stderr
    assert "Master must either be yarn or start with spark, k8s, or local" in done.stderr
    assert "\tat org.apache" not in done.stderr  # the reason, not the stack frames


def _spread(first_id: int, start: datetime, n: int, places: list[str]) -> list[Delivery]:
    """n tweets a minute apart, ids consecutive so that every partition gets some."""
    return [
        Delivery(start + timedelta(minutes=i), tweet(first_id + i, places[i % len(places)], 1))
        for i in range(n)
    ]


def _operators(query) -> dict[str, int]:
    """State rows per stateful operator, from the query's own progress report."""
    return {op["operatorName"]: op["numRowsTotal"] for op in query.lastProgress["stateOperators"]}


def _drain(settings: Settings) -> list:
    queries = start_queries(settings, once=True)
    for streaming_query in queries:
        streaming_query.awaitTermination()
    stop_queries(queries, settings)
    return queries


def test_state_is_evicted_once_the_watermark_passes_a_day(settings: Settings, spark) -> None:
    """Spark forgets tweet ids once every partition has moved on; the view is not its state."""
    first = _spread(1, DAY0 + timedelta(hours=10), 30, LOCATIONS)
    produce(settings, first)
    view_query = _drain(settings)[0]
    assert _operators(view_query) == {"dedupeWithinWatermark": 30}  # day 0's ids, nothing else

    later = _spread(100, DAY0 + timedelta(days=3), 30, ["Oslo", "Bergen"])
    produce(settings, later)
    view_query = _drain(settings)[0]
    # The watermark is 25 h behind day 3: day 0's ids are gone, day 3's are held.
    assert _operators(view_query) == {"dedupeWithinWatermark": 30}
    figures = status(settings)
    assert figures["speed"]["state_rows"] == 30
    assert figures["speed"]["lag_records"] == 0
    # The speed view still holds day 0 until a batch run absorbs it: state is not the view.
    assert speed_by_day(settings) == expected_by_day(first + later)


def test_a_batch_run_takes_the_days_before_its_cutoff_from_the_speed_layer(
    settings: Settings, spark
) -> None:
    deliveries = _stream(6, 300, days=3)
    produce(settings, deliveries)
    run_speed(settings, once=True)
    cutoff = (DAY0 + timedelta(days=2)).date()
    run_batch(settings, cutoff=cutoff, progress=False)
    by_day = expected_by_day(deliveries)
    assert speed_by_day(settings) == {k: v for k, v in by_day.items() if k[0] >= cutoff}
    assert as_dict(reads.serving_view(settings)) == expected_view(deliveries)
    assert status(settings)["speed"]["days"] == sorted(
        {day.isoformat() for day, _ in by_day if day >= cutoff}
    )
    # A cutoff cannot move back: those days are in neither view any more.
    with pytest.raises(CutoffMovedBack, match="Use a cutoff on or after"):
        run_batch(settings, cutoff=cutoff - timedelta(days=1), progress=False)
    assert as_dict(reads.serving_view(settings)) == expected_view(deliveries)


def test_a_redeployed_query_replaces_every_row_of_the_old_one(settings: Settings, spark) -> None:
    """Notebook 06's story: a buggy deployment over-counts, the fixed one takes over whole.

    The case a deployment that only overwrote rows it writes would get wrong: a tweet first
    delivered at 23:58 and again at 00:03, in a location with no other tweet that day. The
    buggy query (no deduplication) counts it on both days; the fixed one writes no row at all
    for the second day, so the buggy row must go whole.
    """
    lonely = tweet(77, "Solitude", followers=5)
    deliveries = sorted(
        [
            *_stream(7, 200),
            Delivery(DAY0 + timedelta(hours=23, minutes=58), lonely),
            Delivery(DAY0 + timedelta(days=1, minutes=3), lonely),
        ],
        key=lambda d: d.ts,
    )
    produce(settings, deliveries)
    run_speed(settings, once=True, deduplicate=buggy_deduplicate, checkpoint_name="buggy")
    assert as_dict(reads.serving_view(settings))["Solitude"] == [2, 10, 0, 0]  # the bug

    run_speed(settings, once=True, checkpoint_name="fixed")
    assert as_dict(reads.serving_view(settings)) == expected_view(deliveries)
    deployments = warehouse.fetch_frame(
        "SELECT checkpoint, serving, retired_at IS NOT NULL AS retired FROM speed_deployments",
        settings=settings,
    )
    names = {Path(c).name: (s, r) for c, s, r in deployments.itertuples(index=False)}
    assert names == {"buggy": (False, True), "fixed": (True, False)}
    rows_of = warehouse.fetch_frame(
        "SELECT DISTINCT d.checkpoint FROM speed_view v "
        "JOIN speed_deployments d USING (deployment)",
        settings=settings,
    )
    assert [Path(c).name for c in rows_of["checkpoint"]] == ["fixed"]

    # The old query, restarted from its checkpoint, refuses to write a single row.
    more = [Delivery(DAY0 + timedelta(days=2, hours=1), tweet(5000, "London", 3))]
    produce(settings, more)
    with pytest.raises(DeploymentRetired, match="delete that checkpoint directory"):
        run_speed(settings, once=True, deduplicate=buggy_deduplicate, checkpoint_name="buggy")
    run_speed(settings, once=True, checkpoint_name="fixed")
    assert as_dict(reads.serving_view(settings)) == expected_view(deliveries + more)


def test_a_micro_batch_committed_in_the_warehouse_but_not_by_spark_is_skipped(
    settings: Settings, spark
) -> None:
    """The crash the batch-id claim exists for: the sink's transaction committed, and Spark died
    before writing its commit log. On restart Spark runs that micro-batch again, and the sink,
    which adds sums, must skip it: otherwise every tweet in it would count twice."""
    deliveries = _stream(12, 200)
    produce(settings, deliveries)
    reports = [json.loads(p.json) for p in run_speed(settings, once=True)[0].recentProgress]
    crashed = max(r["batchId"] for r in reports if r["numInputRows"])
    # The checkpoint as the crash left it: micro-batch `crashed` planned, never marked done.
    checkpoint = Path(settings.checkpoints) / "speed_view"
    for log, first_gone in (("offsets", crashed + 1), ("commits", crashed)):
        for entry in (checkpoint / log).iterdir():
            batch = entry.name.lstrip(".").split(".")[0]
            if batch.isdigit() and int(batch) >= first_gone:
                entry.unlink()

    rerun = [json.loads(p.json) for p in run_speed(settings, once=True)[0].recentProgress]
    assert [r["numInputRows"] for r in rerun if r["batchId"] == crashed] == [len(deliveries)]
    assert as_dict(reads.serving_view(settings)) == expected_view(deliveries)


def test_a_checkpoint_of_another_query_is_refused_in_words(settings: Settings, spark) -> None:
    """A checkpoint whose state a different stateful query wrote (a changed query, or one from
    an earlier version of this project) cannot be resumed: the error says what to delete."""
    from lambda_demo.speed.run import CheckpointOfAnotherQuery

    produce(settings, _stream(13, 40))
    run_speed(
        settings,
        once=True,
        deduplicate=lambda tweets: tweets.dropDuplicates(["tweet_id", "ingest_ts"]),
        checkpoint_name="changed",
    )
    produce(settings, _stream(14, 40, start_id=5_000))
    with pytest.raises(CheckpointOfAnotherQuery, match="changed holds the state of a different"):
        run_speed(settings, once=True, checkpoint_name="changed")


def test_a_new_deployment_serves_only_once_it_has_caught_up(settings: Settings, spark) -> None:
    """The take-over rule on its own: registered and writing is not enough, caught up is."""
    deliveries = _stream(8, 100)
    produce(settings, deliveries)
    run_speed(settings, once=True, checkpoint_name="old")
    served = as_dict(reads.serving_view(settings))
    assert served == expected_view(deliveries)

    # A new deployment's first micro-batch: registered, rows written, not at the end yet.
    conn = warehouse.connect(settings)
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO speed_deployments (deployment, checkpoint, batch_id) "
            "VALUES ('new', 'cp/new', 0)"
        )
        cur.execute(
            "INSERT INTO speed_view (deployment, ingest_day, location, tweet_count, "
            "followers_sum, likes_sum, retweets_sum) VALUES ('new', %s, 'Elsewhere', 1, 1, 1, 1)",
            (DAY0.date(),),
        )
    conn.close()

    def report(batch_id: int, end: int, latest: int) -> dict:
        offsets = {settings.topic: {"0": end}}
        return {
            "id": "new",
            "batchId": batch_id,
            "sources": [{"endOffset": offsets, "latestOffset": {settings.topic: {"0": latest}}}],
            "stateOperators": [{"numRowsTotal": 1, "numRowsDroppedByWatermark": 0}],
            "eventTime": {},
        }

    record_progress(settings, report(0, end=5, latest=9))
    assert as_dict(reads.serving_view(settings)) == served  # still the old deployment

    conn = warehouse.connect(settings)
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE speed_deployments SET batch_id = 1 WHERE deployment = 'new'")
    conn.close()
    record_progress(settings, report(1, end=9, latest=9))
    assert as_dict(reads.serving_view(settings)) == {"Elsewhere": [1, 1, 1, 1]}
    left = warehouse.fetch_frame("SELECT DISTINCT deployment FROM speed_view", settings=settings)[
        "deployment"
    ]
    assert list(left) == ["new"]  # the old deployment's rows are gone with it


def test_a_record_later_than_the_watermark_is_named_by_check_and_counted_by_batch(
    settings: Settings, spark
) -> None:
    """Spark drops it, `check` says that is all the mismatch is, the next batch run counts it."""
    first = _spread(1, DAY0 + timedelta(days=3), 30, ["Oslo", "Bergen"])
    produce(settings, first)
    run_speed(settings, once=True)
    # Every partition is at day 3, so the watermark is past day 1: day 0 is forgotten.
    late = [
        Delivery(DAY0 + timedelta(hours=10, minutes=i), tweet(500 + i, "Tromsø", 4))
        for i in range(3)
    ]
    produce(settings, late)
    run_speed(settings, once=True)
    assert "Tromsø" not in as_dict(reads.serving_view(settings))
    result = check(settings)
    assert not result.ok
    assert result.late_rows >= 3 and result.missing_tweets == 3 and result.only_late
    assert "after its watermark had passed their day" in str(result)

    run_batch(settings, cutoff=(DAY0 + timedelta(days=1)).date(), progress=False)
    assert check(settings).ok  # nothing was lost: the batch layer counted them
    assert as_dict(reads.serving_view(settings)) == expected_view(first + late)


def test_a_second_speed_layer_on_the_same_checkpoint_is_refused(settings: Settings, spark) -> None:
    """One writer per view: a second run of the same checkpoint refuses in words, even from
    another warehouse session (as another process would be), and the lock goes with the first."""
    from lambda_demo.speed.run import SpeedLayerBusy

    deliveries = _stream(11, 60)
    produce(settings, deliveries)
    first = start_queries(settings, trigger_seconds=0.5)
    try:
        with pytest.raises(SpeedLayerBusy, match="already running on schema"):
            start_queries(settings, once=True)
        assert [q.isActive for q in first] == [True]
    finally:
        stop_queries(first, settings)
    run_speed(settings, once=True)  # the lock went with the first run
    assert as_dict(reads.serving_view(settings)) == expected_view(deliveries)
