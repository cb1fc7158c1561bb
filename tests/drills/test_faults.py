"""Fault drills on the real stack: kill a service or a layer mid-work, restart, prove exactness.

Drills that kill a service run on a PRIVATE stack (its own LAMBDA_DEMO_HOME), so the session
stack the other tests share is never touched. Each drill ends the same way: the layers run
again, and ``check`` (a recomputation straight from Kafka) must find zero mismatches.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from helpers import (
    DAY0,
    Delivery,
    all_records,
    cli_command,
    committed_speed_batch,
    end_offsets,
    env_for,
    expected_by_day,
    isolated_settings,
    private_stack,
    produce,
    query,
    ready,
    speed_by_day,
    topic_size,
    tweet,
    wait_until,
)

from lambda_demo import stack
from lambda_demo.batch.archiver import list_archived
from lambda_demo.batch.run import run_batch
from lambda_demo.clients import storage
from lambda_demo.contract import FlatTweet, parse_api_tweet
from lambda_demo.ingestion import sample
from lambda_demo.ingestion.replay import read_lines, replay
from lambda_demo.serving.check import check
from lambda_demo.settings import Settings
from lambda_demo.speed.run import run_speed

pytestmark = [pytest.mark.drills, pytest.mark.integration]

CUTOFF_ALL = date(2100, 1, 1)  # batch view over every ingest day: check needs no speed run
LOCATIONS = ["London", "Zürich 🇨🇭", 'Paris; "FR"', "東京", "(unknown)"]


@pytest.fixture(scope="module")
def private_home() -> Iterator[Path]:
    with private_stack() as settings:
        yield settings.home


def _pid(home: Path, service: str) -> int:
    return json.loads((home / "stack" / "state.json").read_text())[service]["pid"]


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kill_service(home: Path, service: str) -> None:
    """SIGKILL a service's process and wait until it and its children are gone (a restart
    needs the ports and, for PostgreSQL, the shared memory they held)."""
    pid = _pid(home, service)
    processes = [pid, *_children(pid)]
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: not any(_alive(p) for p in processes), 60, f"{service} and its children to exit"
    )


def _stop(process: subprocess.Popen, *, after: float) -> int:
    try:
        return process.wait(timeout=after)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def _assert_master_dataset_exact(settings: Settings) -> None:
    """S3 objects tile each partition from 0 to the end, no gap and no overlap."""
    by_partition: dict[int, list] = {}
    for obj in list_archived(settings, client=storage.s3_client(settings)):
        by_partition.setdefault(obj.partition, []).append(obj)
    ends = end_offsets(settings)
    assert len(ends) == settings.partitions
    for tp in sorted(ends, key=lambda tp: tp.partition):
        objects = sorted(by_partition.get(tp.partition, []), key=lambda o: o.start)
        next_offset = 0
        for obj in objects:
            assert obj.start == next_offset, f"gap or overlap at {obj.key}"
            next_offset = obj.end + 1
        assert next_offset == ends[tp], f"partition {tp.partition} archived up to {next_offset}"
    rows = query(
        settings,
        "SELECT COUNT(*), COUNT(DISTINCT (kafka_partition, kafka_offset)) FROM raw_tweets",
    )
    assert rows[0][0] == rows[0][1], "a Kafka record was loaded twice"


# --- (a) Kafka killed during a replay --------------------------------------------------------


def test_kafka_killed_mid_replay_resumes_without_loss(private_home: Path, tmp_path: Path) -> None:
    settings = ready(isolated_settings(private_home))
    path = tmp_path / "sample.jsonl"
    sample.write(path, tweets=3000, days=2, seed=11)
    parsed = [parse_api_tweet(line) for line in read_lines(path)]
    valid = sum(isinstance(p, FlatTweet) for p in parsed)
    invalid = sum(p is not None and not isinstance(p, FlatTweet) for p in parsed)

    # Two simulated days in ~17 s, so the broker dies in the middle of the replay, and comes
    # back while the replay still produces: the producer may give up on some batches (the
    # ones in flight) and deliver later ones, leaving holes that the resume must fill.
    process = subprocess.Popen(
        cli_command("replay", "--file", str(path), "--speedup", "10000", "--json"),
        env=env_for(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def replaying_and_300_in_kafka() -> bool:
        assert process.poll() is None, "the replay ended before the broker was killed"
        return topic_size(settings) >= 300

    try:
        wait_until(replaying_and_300_in_kafka, 120, "the replay to be 300 records in")
        _kill_service(private_home, "kafka")
        stack.up(settings)  # restarts the broker on its ports, with its data
        process.wait(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    partial = topic_size(settings)
    assert 0 < partial <= valid

    counts = replay(files=[path], settings=settings, progress=False)
    assert counts.failed == 0
    tweets = all_records(settings, settings.topic)
    lines = [int(dict(r.headers)["replay-line"]) for r in tweets]
    assert len(lines) == len(set(lines)), "the resumed replay duplicated records"
    assert len(tweets) == valid, "valid tweets were lost"
    assert len(all_records(settings, settings.dlq_topic)) == invalid

    run_speed(settings, once=True)
    run_batch(settings, progress=False)
    result = check(settings)
    assert result.ok, str(result)
    assert result.tweets == len({t.tweet_id for t in _flat(parsed)})


def _flat(parsed: list) -> list[FlatTweet]:
    return [p for p in parsed if isinstance(p, FlatTweet)]


# --- (b) the archiver killed between its S3 write and its offset commit ----------------------


def _many_days(n_days: int, per_day: int, *, start_id: int = 1) -> list[Delivery]:
    out = []
    for day in range(n_days):
        for i in range(per_day):
            tweet_id = start_id + day * per_day + i
            ts = DAY0 + timedelta(days=day, seconds=i)
            out.append(Delivery(ts, tweet(tweet_id, LOCATIONS[tweet_id % len(LOCATIONS)], 3, 1)))
    return out


def test_archiver_killed_mid_archive_loses_and_duplicates_nothing(
    settings: Settings, cli_env: dict[str, str]
) -> None:
    deliveries = _many_days(30, 600)  # 30 ingest days x 3 partitions: ~90 objects to write
    produce(settings, deliveries)
    s3 = storage.s3_client(settings)
    process = subprocess.Popen(
        cli_command("batch", "--cutoff", CUTOFF_ALL.isoformat()),
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def archiving() -> bool:
        assert process.poll() is None, "the batch run ended before it was killed"
        return bool(list_archived(settings, client=s3))

    try:
        wait_until(archiving, 180, "the first archived object", interval=0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    at_kill = len(list_archived(settings, client=s3))
    assert 0 < at_kill < 90, f"{at_kill} objects at the kill: the drill missed its window"

    summary = run_batch(settings, cutoff=CUTOFF_ALL, progress=False)
    assert summary.rows_loaded == len(deliveries)
    _assert_master_dataset_exact(settings)
    result = check(settings)
    assert result.ok, str(result)
    assert result.tweets == len(deliveries)


# --- (c) PostgreSQL killed during a speed-layer write ----------------------------------------


def _stream(start_id: int, n: int, start: timedelta) -> list[Delivery]:
    return [
        Delivery(
            DAY0 + start + timedelta(seconds=30 * i),
            tweet(start_id + i, LOCATIONS[i % len(LOCATIONS)], followers=i, likes=i % 3),
        )
        for i in range(n)
    ]


def _tweets_in_speed_view(settings: Settings) -> int:
    return query(settings, "SELECT COALESCE(SUM(tweet_count), 0) FROM speed_view")[0][0]


def test_postgres_killed_during_speed_writes_then_restart_is_exact(private_home: Path) -> None:
    settings = ready(isolated_settings(private_home))
    first = _stream(1, 300, timedelta(hours=1))
    produce(settings, first)
    process = subprocess.Popen(
        cli_command("speed", "--trigger-seconds", "0.5"),
        env=env_for(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def speed_committed() -> bool:
        assert process.poll() is None, "the speed layer exited before its first commit"
        return committed_speed_batch(settings) >= 0

    def writing_new_chunks() -> bool:
        assert process.poll() is None, "the speed layer exited before the kill"
        return _tweets_in_speed_view(settings) > len(first)

    more: list[Delivery] = []
    try:
        wait_until(speed_committed, 240, "the speed layer's first commit", interval=0.5)

        chunks = [_stream(10_000 + 100 * k, 100, timedelta(hours=4 + k)) for k in range(8)]
        more = [d for chunk in chunks for d in chunk]

        def producing() -> None:
            for chunk in chunks:
                produce(settings, chunk)
                time.sleep(0.3)  # traffic keeps arriving: micro-batches keep writing

        producer = threading.Thread(target=producing)
        producer.start()
        wait_until(writing_new_chunks, 120, "micro-batches to write the new chunks", interval=0.1)
        _kill_service(private_home, "postgres")
        producer.join(timeout=120)
        speed_rc = _stop(process, after=90)  # it may crash; it must not corrupt
        stack.up(settings)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # Crashing is allowed (speed_rc != 0, psycopg2.OperationalError on stderr); what counts
    # is that the restart below is exact.
    del speed_rc

    run_speed(settings, once=True)  # restart once, from the checkpoint
    assert speed_by_day(settings) == expected_by_day(first + more)
    result = check(settings)
    assert result.ok, str(result)


# --- (d) two batch runs at once --------------------------------------------------------------


def test_two_concurrent_batch_processes_never_corrupt(
    settings: Settings, cli_env: dict[str, str]
) -> None:
    deliveries = _many_days(3, 500)
    deliveries.append(Delivery(DAY0, garbage=b"\xff not a tweet"))
    produce(settings, deliveries)
    processes = [
        subprocess.Popen(
            cli_command("batch", "--cutoff", CUTOFF_ALL.isoformat()),
            env=cli_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outcomes = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        outcomes.append((process.returncode, out.decode(), err.decode()))
    codes = sorted(rc for rc, _out, _err in outcomes)
    assert codes in ([0, 0], [0, 2]), outcomes
    for rc, _out, err in outcomes:
        if rc == 2:
            assert "Another batch run" in err and "Let it finish" in err
    _assert_master_dataset_exact(settings)
    assert query(settings, "SELECT COUNT(*) FROM raw_tweets") == [(len(deliveries) - 1,)]
    assert query(settings, "SELECT COUNT(*) FROM quarantine WHERE layer = 'batch'") == [(1,)]
    assert query(settings, "SELECT COUNT(DISTINCT run_id) FROM batch_view") == [(1,)]
    result = check(settings)
    assert result.ok, str(result)
    assert result.tweets == len(deliveries) - 1
