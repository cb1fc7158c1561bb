"""``lambda-demo status`` through the hand-over, every figure against an independent count.

The scenario is the one a learner runs from a shell: replay a generated stream, ``speed
--once``, ``batch --cutoff D1``, ``speed --once``, ``batch --cutoff D2``. The expected figures
come from reading the topic with a plain consumer and the JSON with ``json``, not from the
package's own layers.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path

import pytest
from helpers import DAY0, Delivery, all_records, produce, run_cli, tweet, wait_until

from lambda_demo.ingestion.clock import format_utc, from_millis
from lambda_demo.settings import Settings
from lambda_demo.speed.run import start_queries, stop_queries
from lambda_demo.status import status
from lambda_demo.tutorial.live_view import serving_sample, watch

pytestmark = pytest.mark.integration


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``lambda-demo <args>``, which must succeed."""
    done = run_cli(env, *args)
    assert done.returncode == 0, (args, done.stderr[-2000:])
    return done


def test_status_shows_the_hand_over_with_exact_figures(
    settings: Settings, cli_env: dict[str, str], tmp_path: Path
) -> None:
    stream = tmp_path / "three_days.jsonl.gz"
    _cli(cli_env, "sample", "generate", "--tweets", "1500", "--days", "3", "--seed", "9",
         "--out", str(stream))  # fmt: skip
    replayed = json.loads(_cli(cli_env, "replay", "--file", str(stream), "--json").stdout)

    # The truth, from the topic itself: first delivery of each tweet id wins.
    deliveries = sorted(
        all_records(settings, settings.topic), key=lambda r: (r.timestamp, r.partition, r.offset)
    )
    first: dict[str, tuple[date, dict]] = {}
    for record in deliveries:
        value = json.loads(record.value)
        first.setdefault(value["tweet_id"], (from_millis(record.timestamp).date(), value))
    days = sorted({day for day, _ in first.values()})
    assert len(days) >= 3
    d1, d2 = days[1], days[2]

    _cli(cli_env, "speed", "--once")
    _cli(cli_env, "batch", "--cutoff", d1.isoformat())
    _cli(cli_env, "speed", "--once")
    _cli(cli_env, "batch", "--cutoff", d2.isoformat())
    figures = json.loads(_cli(cli_env, "status", "--json").stdout)

    before_d2 = [v for day, v in first.values() if day < d2]
    assert figures["kafka"] == {
        "records": len(deliveries),
        "dead_lettered": len(all_records(settings, settings.dlq_topic)),
    }
    assert figures["kafka"]["records"] == replayed["produced"]
    assert figures["kafka"]["dead_lettered"] == replayed["dead_lettered"]
    assert figures["archive"]["records"] == len(deliveries)  # everything archived by run 2
    assert figures["warehouse"]["raw_rows"] == len(deliveries)  # every record here is valid
    assert figures["warehouse"]["loaded_objects"] == figures["archive"]["objects"] > 0
    assert figures["batch"] == {
        "cutoff": d2.isoformat(),
        "tweets": len(before_d2),
        "locations": len({v["location"] for v in before_d2}),
    }
    speed = figures["speed"]
    assert speed["days"] == sorted({day.isoformat() for day, _ in first.values() if day >= d2})
    assert all(day >= d2.isoformat() for day in speed["days"])
    assert speed["lag_records"] == 0
    # Caught up: the newest record in Kafka is the newest the view reflects, 0 s behind.
    newest = format_utc(max(from_millis(r.timestamp) for r in deliveries))
    assert speed["newest_in_kafka"] == speed["newest_ingest"] == newest
    assert speed["lag_seconds"] == 0
    assert speed["late_rows"] == 0
    assert isinstance(speed["state_rows"], int) and speed["state_rows"] > 0
    assert figures["serving"] == {
        "tweets": len(first),
        "locations": len({v["location"] for _, v in first.values()}),
    }

    expected: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for _, v in first.values():
        row = expected[v["location"]]
        for i, name in enumerate(("followers_count", "like_count", "retweet_count")):
            row[i + 1] += v[name]
        row[0] += 1
    served = json.loads(_cli(cli_env, "query", "--json").stdout)
    assert {
        r["location"]: [r["tweet_count"], r["followers_sum"], r["likes_sum"], r["retweets_sum"]]
        for r in served
    } == dict(expected)
    _cli(cli_env, "check")

    words = _cli(cli_env, "status").stdout
    assert f"cutoff {d2.isoformat()}" in words
    assert "0 records and 0.0 s behind Kafka" in words
    assert f"newest ingest time served {newest}, in Kafka {newest}" in words

    # The cutoff never moves back: refused in words, before any work, and nothing changes.
    back = run_cli(cli_env, "batch", "--cutoff", d1.isoformat())
    assert back.returncode == 2
    assert back.stderr.startswith("error: The batch view already covers the days before")
    assert len(back.stderr.strip().splitlines()) == 1
    _cli(cli_env, "batch")  # the default cutoff is never earlier than the published one
    after = json.loads(_cli(cli_env, "status", "--json").stdout)
    assert after["batch"]["cutoff"] >= d2.isoformat()
    assert after["serving"] == figures["serving"]


def test_status_before_any_run_says_so(settings: Settings, cli_env: dict[str, str]) -> None:
    figures = json.loads(_cli(cli_env, "status", "--json").stdout)
    assert figures["batch"] == {"cutoff": None, "tweets": 0, "locations": 0}
    assert figures["speed"]["state_rows"] is None
    assert figures["speed"]["days"] == []
    assert figures["speed"]["lag_seconds"] is None  # an empty topic has no "now"
    assert figures["speed"]["newest_ingest"] is None
    assert "no batch run yet" in _cli(cli_env, "status").stdout


def _london(first_id: int, start, n: int) -> list[Delivery]:
    """n tweets a minute apart, ids consecutive so that every partition gets some."""
    return [Delivery(start + timedelta(minutes=i), tweet(first_id + i, "London")) for i in range(n)]


def test_lag_is_zero_once_caught_up_and_grows_while_the_speed_layer_is_stopped(
    settings: Settings, spark
) -> None:
    """Records behind from Kafka offsets, seconds behind from ingest times, as they change."""
    first = _london(1, DAY0 + timedelta(hours=10), 30)
    produce(settings, first)
    queries = start_queries(settings)
    try:
        # The running query catches up; its listener records the progress that says so.
        speed = wait_until(
            lambda: (s := status(settings)["speed"])["lag_records"] == 0 and s,
            120,
            "the speed layer to catch up",
        )
    finally:
        stop_queries(queries, settings)
    assert speed["lag_seconds"] == 0
    assert speed["newest_ingest"] == speed["newest_in_kafka"] == format_utc(first[-1].ts)

    # Stopped, while records arrive: behind by exactly those records and their time span.
    later = _london(100, DAY0 + timedelta(hours=14), 12)
    produce(settings, later)
    speed = status(settings)["speed"]
    assert speed["lag_records"] == len(later)
    assert speed["lag_seconds"] == (later[-1].ts - first[-1].ts).total_seconds()
    assert speed["newest_ingest"] == format_utc(first[-1].ts)
    assert speed["newest_in_kafka"] == format_utc(later[-1].ts)
    # The live view's sampler reads the same figures (no clock: stream seconds are wall ones).
    sample = serving_sample(settings, started=time.monotonic())
    assert (sample["lag_records"], sample["lag_simulated_seconds"]) == (
        len(later),
        speed["lag_seconds"],
    )
    assert sample["lag_wall_seconds"] == speed["lag_seconds"]

    def catch_up() -> None:
        queries = start_queries(settings, once=True)
        try:
            for query in queries:
                query.awaitTermination()
        finally:
            stop_queries(queries, settings)  # records the last progress before returning

    # The live view watches the restarted speed layer; its last sample is the final state.
    with ThreadPoolExecutor(max_workers=1) as pool:
        samples = watch(pool.submit(catch_up), settings, every_seconds=0.2)
    last = samples.iloc[-1]
    assert (last["lag_records"], last["lag_simulated_seconds"]) == (0, 0)
    assert last["speed_tweets"] == len(first) + len(later)
    assert last["batch_tweets"] == 0
    assert status(settings)["speed"]["newest_ingest"] == format_utc(later[-1].ts)
