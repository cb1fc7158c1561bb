"""Settings: environment prefix, profiles, secrets that never print."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lambda_demo.errors import SettingsError
from lambda_demo.settings import Settings


def test_environment_variables_with_the_prefix_configure_settings(clean_env, tmp_path: Path):
    clean_env.setenv("LAMBDA_DEMO_HOME", str(tmp_path))
    clean_env.setenv("LAMBDA_DEMO_TOPIC", "my-tweets")
    clean_env.setenv("LAMBDA_DEMO_PARTITIONS", "6")
    clean_env.setenv("LAMBDA_DEMO_FILTER_RULES", '["a", "b"]')
    s = Settings(_env_file=None)
    assert (s.home, s.topic, s.partitions, s.filter_rules) == (tmp_path, "my-tweets", 6, ["a", "b"])


def test_dotenv_file_is_read(clean_env, tmp_path: Path):
    env_file = tmp_path / ".env"
    env_file.write_text("LAMBDA_DEMO_S3_BUCKET=from-dotenv\n")
    assert Settings(_env_file=env_file).s3_bucket == "from-dotenv"


def test_embedded_profile_reads_the_recorded_stack(clean_env, tmp_path: Path):
    state = {
        "kafka": {"port": 1111},
        "s3": {"port": 2222, "access_key": "ak", "secret_key": "very-secret"},
        "postgres": {"port": 3333, "password": "pg-secret"},
    }
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / "state.json").write_text(json.dumps(state))
    ends = Settings(home=tmp_path, _env_file=None).endpoints()
    assert ends.kafka_bootstrap == "127.0.0.1:1111"
    assert ends.s3_endpoint == "http://127.0.0.1:2222"
    assert (ends.warehouse_host, ends.warehouse_port) == ("127.0.0.1", 3333)
    assert "very-secret" not in repr(ends) and "pg-secret" not in repr(ends)


def test_explicit_addresses_override_the_profile(clean_env, tmp_path: Path):
    s = Settings(
        profile="aws",
        kafka_bootstrap="b-1.example:9092",
        warehouse_host="cluster.example",
        warehouse_port=5439,
        warehouse_password="pw",
        _env_file=None,
    )
    ends = s.endpoints()
    assert ends.kafka_bootstrap == "b-1.example:9092"
    assert ends.s3_endpoint is None  # boto3 then talks to AWS S3 itself
    assert ends.warehouse_port == 5439


def test_embedded_without_a_stack_says_what_to_run(clean_env, tmp_path: Path):
    with pytest.raises(SettingsError, match="lambda-demo stack up"):
        Settings(home=tmp_path, _env_file=None).endpoints()


def test_aws_profile_names_the_missing_variables(clean_env):
    with pytest.raises(SettingsError, match="LAMBDA_DEMO_KAFKA_BOOTSTRAP"):
        Settings(profile="aws", _env_file=None).endpoints()


def test_secrets_never_appear_in_the_settings_repr(clean_env):
    s = Settings(x_bearer_token="AAAA-bearer", warehouse_password="hunter2", _env_file=None)
    assert "AAAA-bearer" not in repr(s) and "hunter2" not in repr(s)


def test_checkpoints_default_under_home(clean_env, tmp_path: Path):
    assert Settings(home=tmp_path, _env_file=None).checkpoints == str(tmp_path / "checkpoints")
