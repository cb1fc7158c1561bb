"""The cluster profile's rules: addresses from the stack state, S3 checkpoints, the KRaft
quorum each node is told about, replication, S3A's jars and options, checkpoint deletion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lambda_demo.clients import spark, storage
from lambda_demo.clients.kafka_io import min_insync_replicas
from lambda_demo.errors import SettingsError
from lambda_demo.settings import Settings, isolated_settings
from lambda_demo.stack import services

STATE = {
    "kafka-1": {"port": 1101},
    "kafka-2": {"port": 1102},
    "kafka-3": {"port": 1103},
    "s3": {"port": 2222, "access_key": "ak", "secret_key": "very-secret"},
    "postgres": {"port": 3333, "password": "pg-secret"},
    "spark": {"port": 7077, "ui_port": 8080},
}


def _home(tmp_path: Path, state: dict) -> Path:
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / "state.json").write_text(json.dumps(state))
    return tmp_path


def test_cluster_profile_reads_every_broker_and_the_master_from_the_stack(
    clean_env, tmp_path: Path
) -> None:
    settings = Settings(home=_home(tmp_path, STATE), profile="cluster", _env_file=None)
    assert settings.endpoints().kafka_bootstrap == "127.0.0.1:1101,127.0.0.1:1102,127.0.0.1:1103"
    assert settings.spark_url() == "spark://127.0.0.1:7077"
    assert settings.checkpoints == "s3a://lambda-demo/checkpoints"


def test_explicit_spark_master_and_checkpoints_win_on_a_cluster(clean_env, tmp_path: Path):
    clean_env.setenv("LAMBDA_DEMO_SPARK_MASTER", "spark://elsewhere:7077")
    clean_env.setenv("LAMBDA_DEMO_CHECKPOINT_LOCATION", "s3a://other/cp")
    settings = Settings(home=_home(tmp_path, STATE), profile="cluster", _env_file=None)
    assert (settings.spark_url(), settings.checkpoints) == (
        "spark://elsewhere:7077",
        "s3a://other/cp",
    )


def test_embedded_profile_keeps_local_master_and_checkpoints(clean_env, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, _env_file=None)
    assert settings.spark_url() == "local[2]"
    assert settings.checkpoints == str(tmp_path / "checkpoints")


def test_a_stack_started_with_the_other_profile_is_named(clean_env, tmp_path: Path) -> None:
    embedded_state = {k: v for k, v in STATE.items() if not k.startswith("kafka-")}
    embedded_state["kafka"] = {"port": 1111}
    settings = Settings(home=_home(tmp_path, embedded_state), profile="cluster", _env_file=None)
    with pytest.raises(SettingsError, match="same LAMBDA_DEMO_PROFILE"):
        settings.endpoints()


@pytest.mark.parametrize(
    ("profile", "root"),
    [("embedded", "{home}/checkpoints/"), ("cluster", "s3a://{bucket}/checkpoints/")],
)
def test_isolated_settings_get_checkpoints_of_their_own_in_the_profiles_place(
    clean_env, tmp_path: Path, profile: str, root: str
) -> None:
    one, two = (isolated_settings(tmp_path, profile=profile) for _ in range(2))
    assert one.checkpoints != two.checkpoints
    for s in (one, two):
        assert s.checkpoints.startswith(root.format(home=tmp_path, bucket=s.s3_bucket))


def test_one_broker_may_be_lost_with_three_replicas() -> None:
    assert [min_insync_replicas(n) for n in (1, 2, 3)] == [1, 1, 2]


def test_every_kafka_node_names_the_whole_quorum_and_one_cluster_id() -> None:
    cluster = services.services_for("cluster")
    state: dict = {s.name: {"port": 1, "controller_port": 9000 + i} for i, s in enumerate(cluster)}
    state["spark"].update(port=7077, ui_port=8080)
    services.link(state, cluster)
    nodes = [state[f"kafka-{n}"] for n in (1, 2, 3)]
    assert {n["voters"] for n in nodes} == {"1@127.0.0.1:9000,2@127.0.0.1:9001,3@127.0.0.1:9002"}
    assert len({n["cluster_id"] for n in nodes}) == 1
    assert [n["node_id"] for n in nodes] == [1, 2, 3] and {n["replicas"] for n in nodes} == {3}
    assert state["spark-worker"]["master"] == "spark://127.0.0.1:7077"
    cluster_id = nodes[0]["cluster_id"]
    services.link(state, cluster)  # a restart keeps the cluster id the storage was formatted with
    assert state["kafka-2"]["cluster_id"] == cluster_id


def test_a_cluster_node_replicates_kafkas_own_topics_and_the_single_broker_does_not(
    tmp_path: Path,
) -> None:
    def config(profile: str) -> str:
        chosen = services.services_for(profile)
        state: dict = {s.name: {"port": 1, "controller_port": 2} for s in chosen}
        state.setdefault("spark", {}).update(port=3, ui_port=4)
        services.link(state, chosen)
        name = "kafka-2" if profile == "cluster" else "kafka"
        return services._kafka_config(tmp_path / name, state[name]).read_text()

    cluster, embedded = config("cluster"), config("embedded")
    assert "node.id=2" in cluster and "offsets.topic.replication.factor=3" in cluster
    assert "min.insync.replicas=2" in cluster and "transaction.state.log.min.isr=2" in cluster
    assert "offsets.topic.replication.factor=1" in embedded and "node.id=1" in embedded
    assert "broker.session.timeout.ms" not in embedded


def test_s3a_comes_at_pysparks_hadoop_version_without_the_sdk_bundle() -> None:
    packages = spark.s3a_packages()
    assert packages[0] == f"org.apache.hadoop:hadoop-aws:{spark.hadoop_version()}"
    assert not any("bundle" in p for p in packages)
    assert "software.amazon.awssdk:bundle" in spark.S3A_EXCLUDES


def test_s3a_options_point_at_the_profiles_endpoint(clean_env, tmp_path: Path) -> None:
    settings = Settings(home=_home(tmp_path, STATE), profile="cluster", _env_file=None)
    options = spark.s3a_options(settings)
    assert options["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:2222"
    assert options["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert options["spark.hadoop.fs.s3a.access.key"] == "ak"
    on_aws = Settings(
        profile="aws",
        kafka_bootstrap="b:9092",
        warehouse_host="w",
        warehouse_port=5439,
        _env_file=None,
    )
    aws = spark.s3a_options(on_aws)
    assert "spark.hadoop.fs.s3a.endpoint" not in aws and "spark.hadoop.fs.s3a.access.key" not in aws


def test_a_local_checkpoint_is_deleted_as_a_folder(tmp_path: Path) -> None:
    checkpoint = tmp_path / "cp" / "speed_view"
    (checkpoint / "offsets").mkdir(parents=True)
    (checkpoint / "offsets" / "0").write_text("v1")
    storage.delete_checkpoints(str(tmp_path / "cp"))
    storage.delete_checkpoints(str(tmp_path / "never-there"))
    assert not (tmp_path / "cp").exists()


def test_a_checkpoint_elsewhere_is_refused_in_words(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="local path or an s3a:// URI"):
        storage.delete_checkpoints("hdfs://namenode/cp")


def test_up_under_a_profile_whose_services_run_elsewhere_starts_nothing(
    clean_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notebooks call ``stack.up()`` in every profile: inside the Compose stack it must
    create the topics and bucket on Compose's services, not start a second, embedded stack."""
    from lambda_demo.stack import manager

    created: list[str] = []
    monkeypatch.setattr(manager, "_create_resources", lambda s, **_: created.append(s.profile))
    monkeypatch.setattr(manager, "start_detached", lambda *a, **k: pytest.fail("started"))
    settings = Settings(home=tmp_path, profile="docker", _env_file=None)
    assert manager.up(settings) == []
    assert created == ["docker"]
    assert not (tmp_path / "stack").exists()
