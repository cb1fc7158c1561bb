"""Drills on the ``cluster`` profile: the same code on three brokers and a Spark cluster.

One private cluster-profile stack (three KRaft nodes, S3Proxy, PostgreSQL, a Spark standalone
master and worker) lives for the module. The drill SIGKILLs the leader of a partition in the
middle of a replay and reads every record back from the two survivors; then SIGKILLs the
Spark worker (and with it the executor holding the streaming state) in the middle of a speed
micro-batch, and the query goes on from its checkpoint in S3. ``speed --once`` and ``batch``
then serve a view equal to one computed from the records as produced, and ``check`` agrees.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import (
    DAY0,
    Delivery,
    all_records,
    as_dict,
    cli_command,
    committed_speed_batch,
    env_for,
    expected_view,
    isolated_settings,
    new_home,
    produce,
    query,
    ready,
    run_cli,
    topic_size,
    tweet,
    wait_until,
)

from lambda_demo import stack
from lambda_demo.clients import storage
from lambda_demo.contract import FlatTweet, parse_api_tweet
from lambda_demo.ingestion import sample
from lambda_demo.ingestion.replay import read_lines
from lambda_demo.serving import reads
from lambda_demo.settings import Settings
from lambda_demo.stack.services import spark_master_json
from lambda_demo.tutorial import brokers

# Not in `make test`: its 2.5 minutes would take CI past its 30-minute budget. `make drills`
# runs it, with the other drills.
pytestmark = [pytest.mark.drills, pytest.mark.integration, pytest.mark.cluster]

LOCATIONS = ["London", "Zürich 🇨🇭", "東京"]


@pytest.fixture(scope="module")
def cluster_home() -> Iterator[Path]:
    settings = Settings(home=new_home(), profile="cluster")
    try:
        stack.up(settings)
        yield settings.home
    finally:
        stack.reset(settings)


def _state(settings: Settings) -> dict:
    return json.loads(settings.state_file.read_text())


def _checkpoint_keys(settings: Settings, name: str = "speed_view") -> set[str]:
    """The speed checkpoint's objects, relative to it (``offsets/3``, ``commits/2``...)."""
    bucket, _, prefix = settings.checkpoints.removeprefix("s3a://").partition("/")
    folder = f"{prefix}/{name}/"
    pages = storage.s3_client(settings).get_paginator("list_objects_v2")
    return {
        item["Key"].removeprefix(folder)
        for page in pages.paginate(Bucket=bucket, Prefix=folder)
        for item in page.get("Contents", [])
    }


def _batches(keys: set[str], log: str) -> set[int]:
    return {int(k.split("/")[1]) for k in keys if k.startswith(f"{log}/") and k[-1].isdigit()}


def _speed_totals(settings: Settings) -> dict[str, list[int]]:
    rows = query(
        settings,
        "SELECT location, SUM(tweet_count), SUM(followers_sum), SUM(likes_sum), "
        "SUM(retweets_sum) FROM speed_view GROUP BY location",
    )
    return {r[0]: [int(v) for v in r[1:]] for r in rows}


def _chunk(k: int, n: int = 100) -> list[Delivery]:
    start = 10**18 + 1000 * k  # far from the sample's ids
    return [
        Delivery(
            DAY0 + timedelta(days=5, minutes=k, seconds=i),
            tweet(start + i, LOCATIONS[i % len(LOCATIONS)], followers=i, likes=i % 4, retweets=1),
        )
        for i in range(n)
    ]


def test_cluster_loses_a_broker_and_a_worker_and_stays_exact(
    cluster_home: Path, tmp_path: Path
) -> None:
    settings = ready(isolated_settings(cluster_home, profile="cluster"))
    env = {**env_for(settings), "LAMBDA_DEMO_PROFILE": "cluster", "CI": "1"}
    assert settings.checkpoints.startswith(f"s3a://{settings.s3_bucket}/")

    # Every partition on the three brokers, and acks=all needs two of them.
    partitions = brokers.describe_partitions(settings, [settings.topic])
    assert {len(p.replicas) for p in partitions} == {3} and brokers.fully_in_sync(partitions)
    assert brokers.min_insync_replicas_of(settings, settings.topic) == 2

    # --- a broker SIGKILLed during a replay --------------------------------------------------
    path = tmp_path / "sample.jsonl"
    sample.write(path, tweets=3000, days=2, seed=11)
    parsed = [parse_api_tweet(line) for line in read_lines(path)]
    flat = [p for p in parsed if isinstance(p, FlatTweet)]
    invalid = sum(p is not None and not isinstance(p, FlatTweet) for p in parsed)
    replay = subprocess.Popen(
        cli_command("replay", "--file", str(path), "--speedup", "40000", "--json"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def replaying_and_300_in_kafka() -> bool:
        assert replay.poll() is None, "the replay ended before the broker was killed"
        return topic_size(settings) >= 300

    try:
        wait_until(replaying_and_300_in_kafka, 120, "the replay to be 300 records in")
        # The leader of partition 0: its partitions move.
        victim = brokers.node_names(settings)[brokers.leader_of(partitions, settings.topic, 0)]
        stack.kill_service(victim, settings)
        assert replay.poll() is None, "the replay ended before the broker died: too late a kill"
        out, err = replay.communicate(timeout=300)
    finally:
        if replay.poll() is None:
            replay.kill()
    # Two brokers are still in sync: the replay did not even notice, and no record is missing
    # or doubled although the dead broker was the leader and never came back.
    assert replay.returncode == 0, err[-3000:]
    assert json.loads(out)["produced"] == len(flat)
    tweets = all_records(settings, settings.topic)
    lines = [int(dict(r.headers)["replay-line"]) for r in tweets]
    assert len(lines) == len(set(lines)), "a record was written twice"
    assert len(tweets) == len(flat), "records were lost with the broker"
    assert len(all_records(settings, settings.dlq_topic)) == invalid

    # --- the Spark worker SIGKILLed during a speed micro-batch -------------------------------
    speed_err = (tmp_path / "speed.err").open("w+")
    speed = subprocess.Popen(
        cli_command("speed", "--trigger-seconds", "0.5"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=speed_err,
    )
    produced: list[Delivery] = []
    killed_in: list[int] = []
    try:

        def committed() -> bool:
            assert speed.poll() is None, "the speed layer exited before its first commit"
            return committed_speed_batch(settings) >= 0

        wait_until(committed, 240, "the speed layer's first commit on the cluster", interval=0.5)

        stop_producing = threading.Event()

        def producing() -> None:  # traffic keeps arriving: micro-batches keep running
            k = 0
            while not stop_producing.is_set():
                chunk = _chunk(k)
                produce(settings, chunk)
                produced.extend(chunk)
                k += 1
                stop_producing.wait(0.3)

        producer = threading.Thread(target=producing)
        producer.start()
        try:

            def mid_batch() -> int | None:
                """A planned micro-batch after the first, not yet committed."""
                assert speed.poll() is None, "the speed layer exited before the kill"
                keys = _checkpoint_keys(settings)
                running = _batches(keys, "offsets") - _batches(keys, "commits")
                return next((b for b in sorted(running) if b > 0), None)

            killed_in.append(wait_until(mid_batch, 120, "a micro-batch in progress", interval=0.05))
            stack.kill_service("spark-worker", settings)
        finally:
            stop_producing.set()
            producer.join(timeout=60)
        assert f"commits/{killed_in[0]}" not in _checkpoint_keys(settings)
        # A new worker (and the broker rejoins, catching up from the other two); the master
        # gives the application a new executor, which loads the state from the checkpoint.
        stack.up(settings)

        expected_now = expected_view([Delivery(DAY0, t) for t in flat] + produced)

        def caught_up() -> bool:
            assert speed.poll() is None, "the speed layer died with its executor"
            return _speed_totals(settings) == expected_now

        wait_until(caught_up, 180, "the speed layer to recover and catch up", interval=0.5)
        speed.send_signal(signal.SIGTERM)
        # 130: stopped by the signal, cleanly (the exit status of an interrupted command).
        assert speed.wait(timeout=120) == 130, Path(speed_err.name).read_text()[-3000:]
    finally:
        if speed.poll() is None:
            speed.kill()
            speed.wait()
        speed_err.close()

    # --- speed --once (from its S3 checkpoint) and batch serve the exact view ----------------
    last = _chunk(99)
    produce(settings, last)
    before = committed_speed_batch(settings)
    once = run_cli(env, "speed", "--once", timeout=300)
    assert once.returncode == 0, once.stderr[-3000:]
    deployments = query(settings, "SELECT deployment, batch_id FROM speed_deployments")
    assert len(deployments) == 1 and deployments[0][1] > before, "not resumed from its checkpoint"
    batch = run_cli(env, "batch", timeout=300)
    assert batch.returncode == 0, batch.stderr[-3000:]
    expected = expected_view([Delivery(DAY0, t) for t in flat] + produced + last)
    assert as_dict(reads.serving_view(settings)) == expected
    checked = run_cli(env, "check", "--json", timeout=300)
    assert checked.returncode == 0 and json.loads(checked.stdout)["ok"], checked.stdout

    # The checkpoint is objects in S3, and the master's web UI lists both applications.
    keys = _checkpoint_keys(settings)
    assert {"metadata", "offsets/0", "commits/0"} <= keys
    assert any(k.startswith("state/") for k in keys), "no state store files in S3"
    master = spark_master_json(_state(settings)["spark"]["ui_port"])
    assert master is not None
    apps = [a for a in master["activeapps"] + master["completedapps"] if a["name"] == "lambda-demo"]
    assert len(apps) == 2, [(a["id"], a["name"]) for a in apps]

    # Deleting a checkpoint (notebooks' fresh workspaces) deletes its objects.
    storage.delete_checkpoints(settings.checkpoints, settings)
    assert not _checkpoint_keys(settings)
