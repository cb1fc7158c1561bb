"""Losing a broker, the parts that need no Kafka: the partition table and when it is whole
again, Kafka's address on a stack that runs Kafka alone, which services ``kafka_only``
starts, and ``kill_service`` on a real process tree."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import psutil
import pytest

from lambda_demo import stack
from lambda_demo.errors import SettingsError, StackError
from lambda_demo.settings import Settings
from lambda_demo.stack import manager
from lambda_demo.stack.process import start_detached, started_at
from lambda_demo.tutorial.brokers import (
    PartitionState,
    fully_in_sync,
    leader_of,
    partition_table,
)

NAMES = {1: "kafka-1", 2: "kafka-2", 3: "kafka-3"}
WHOLE = [
    PartitionState("tweets", 0, 2, (1, 2, 3), (1, 2, 3)),
    PartitionState("tweets", 1, 3, (1, 2, 3), (1, 2, 3)),
]
# kafka-2 killed: partition 0 has no leader yet, partition 1 has lost a follower.
BROKEN = [
    PartitionState("tweets", 0, -1, (1, 2, 3), (1, 3)),
    PartitionState("tweets", 1, 3, (1, 2, 3), (1, 3)),
]


def test_the_table_names_the_nodes_and_counts_the_replicas_in_sync() -> None:
    table = partition_table(BROKEN, NAMES)
    assert table.loc[("tweets", 0)].to_dict() == {
        "leader": "none",
        "replicas": "kafka-1, kafka-2, kafka-3",
        "in-sync replicas": "kafka-1, kafka-3",
        "in sync": "2 of 3",
    }
    assert table.loc[("tweets", 1), "leader"] == "kafka-3"


def test_whole_again_means_every_replica_in_sync_and_a_leader_everywhere() -> None:
    assert fully_in_sync(WHOLE)
    assert not fully_in_sync(BROKEN)
    caught_up_without_leader = [PartitionState("tweets", 0, -1, (1, 2, 3), (1, 2, 3))]
    assert not fully_in_sync(caught_up_without_leader)
    assert not fully_in_sync([])  # no partitions described: nothing is known yet


def test_leader_of_one_partition() -> None:
    assert leader_of(WHOLE, "tweets", 1) == 3
    assert leader_of(BROKEN, "tweets", 0) == -1


def _home(tmp_path: Path, state: dict) -> Path:
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / "state.json").write_text(json.dumps(state))
    return tmp_path


def test_kafka_alone_has_an_address_and_no_warehouse(clean_env, tmp_path: Path) -> None:
    state = {f"kafka-{n}": {"port": 1100 + n, "node_id": n} for n in (1, 2, 3)}
    settings = Settings(home=_home(tmp_path, state), profile="cluster", _env_file=None)
    assert settings.kafka_servers() == "127.0.0.1:1101,127.0.0.1:1102,127.0.0.1:1103"
    with pytest.raises(SettingsError, match="runs Kafka alone"):
        settings.endpoints()


def test_kafka_servers_follow_the_profile_like_endpoints(clean_env, tmp_path: Path) -> None:
    explicit = Settings(profile="aws", kafka_bootstrap="b-1:9092", _env_file=None)
    assert explicit.kafka_servers() == "b-1:9092"  # no warehouse needed to reach Kafka
    assert Settings(profile="docker", _env_file=None).kafka_servers() == "kafka:9092"
    with pytest.raises(SettingsError, match="LAMBDA_DEMO_KAFKA_BOOTSTRAP"):
        Settings(profile="aws", _env_file=None).kafka_servers()
    with pytest.raises(SettingsError, match="lambda-demo stack up"):
        Settings(home=tmp_path, _env_file=None).kafka_servers()


def test_kafka_only_starts_the_profiles_kafka_nodes() -> None:
    names = [s.name for s in manager.chosen_services("cluster", kafka_only=True)]
    assert names == ["kafka-1", "kafka-2", "kafka-3"]
    assert [s.name for s in manager.chosen_services("embedded", kafka_only=True)] == ["kafka"]
    whole = [s.name for s in manager.chosen_services("cluster")]
    assert {"s3", "postgres", "spark", "spark-worker"} < set(whole)


def test_kafka_only_creates_the_topics_and_no_bucket(
    clean_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[tuple[str, bool]] = []
    monkeypatch.setattr(
        manager, "_create_resources", lambda s, bucket=True: created.append((s.profile, bucket))
    )
    settings = Settings(home=tmp_path, profile="docker", _env_file=None)
    manager.up(settings, kafka_only=True)
    manager.up(settings)
    assert created == [("docker", False), ("docker", True)]


def test_kill_service_kills_the_process_and_its_children(clean_env, tmp_path: Path) -> None:
    """A stand-in service (a shell with a child) recorded as ``kafka``: SIGKILLed, both gone,
    and recorded as stopped, so ``up`` restarts it without alarm."""
    script = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    pid = start_detached([sys.executable, "-c", script], log_file=tmp_path / "s.log", cwd=tmp_path)
    parent = psutil.Process(pid)
    try:
        child = _wait_for_child(parent)
        state = {"kafka": {"port": 1, "pid": pid, "started": started_at(pid)}}
        settings = Settings(home=_home(tmp_path, state), _env_file=None)

        stack.kill_service("kafka", settings)

        assert not child.is_running() and not _alive(parent)
        recorded = json.loads(settings.state_file.read_text())["kafka"]
        assert recorded["pid"] is None
        with pytest.raises(StackError, match="not running"):
            stack.kill_service("kafka", settings)
        with pytest.raises(StackError, match="no service 'spark'"):
            stack.kill_service("spark", settings)
    finally:
        for process in [parent, *parent.children(recursive=True)] if _alive(parent) else []:
            process.kill()


def _wait_for_child(parent: psutil.Process) -> psutil.Process:
    from lambda_demo.ingestion.clock import wait_until

    children = wait_until(parent.children, 10, "the stand-in's child", interval_seconds=0.05)
    return children[0]


def _alive(process: psutil.Process) -> bool:
    return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
