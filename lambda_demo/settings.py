"""Every address, topic, bucket, credential and path the tutorial uses, in one place.

Values come from environment variables prefixed ``LAMBDA_DEMO_`` (for example
``LAMBDA_DEMO_PROFILE=docker``) and from an optional, git-ignored ``.env`` file in the
working directory. Four profiles share the same code and differ only in addresses:

* ``embedded`` (default): the local stack started by ``lambda-demo stack up``. Its ports and
  generated credentials are recorded in ``$LAMBDA_DEMO_HOME/stack/state.json`` at first start,
  so the CLI, notebooks and tests all find the same running services.
* ``cluster``: the same ``stack up`` starts a local cluster instead: three Kafka brokers, a
  Spark standalone master and worker, S3Proxy and PostgreSQL. The speed layer runs on the
  ``spark://`` master and keeps its checkpoints in S3 (``s3a://<bucket>/checkpoints``).
* ``docker``: the service names of ``docker/compose.yml`` (``kafka:9092``, ``minio:9000``,
  ``postgres:5432``); credentials come from the Compose env file.
* ``aws``: a real Kafka cluster, AWS S3 and Redshift, and a Spark master URL, each set
  explicitly through the environment.

Secrets are ``SecretStr`` so they never show up in a repr, a log line or a notebook output.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from lambda_demo.errors import SettingsError

Profile = Literal["embedded", "cluster", "docker", "aws"]

STACK_PROFILES = ("embedded", "cluster")
"""The profiles whose services ``lambda-demo stack up`` starts and records in ``state.json``."""

CLUSTER_BROKERS = 3
"""Kafka brokers of the ``cluster`` profile: three, so a topic keeps two in-sync replicas
while one broker is down."""

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent

X_API_URL = "https://api.twitter.com"
"""The X API's base URL, as tweepy has it built in."""

# Compose service addresses, shared by the docker profile and docker/compose.yml's tests.
DOCKER_ADDRESSES = {
    "kafka_bootstrap": "kafka:9092",
    "s3_endpoint": "http://minio:9000",
    "warehouse_host": "postgres",
    "warehouse_port": 5432,
}


def _default_home() -> Path:
    """``.lambda-demo/`` in the repository when running from a checkout, else in the cwd."""
    if (REPO_ROOT / "pyproject.toml").exists():
        return REPO_ROOT / ".lambda-demo"
    return Path.cwd() / ".lambda-demo"


class Settings(BaseSettings):
    """The tutorial's configuration. Each field's variable is ``LAMBDA_DEMO_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="LAMBDA_DEMO_", env_file=".env", extra="ignore", frozen=True
    )

    profile: Profile = "embedded"
    """``LAMBDA_DEMO_PROFILE``: embedded, cluster, docker or aws."""
    home: Path = _default_home()
    """``LAMBDA_DEMO_HOME``: data directory (Kafka logs, S3 objects, warehouse, checkpoints)."""

    # Kafka
    kafka_bootstrap: str | None = None
    """``LAMBDA_DEMO_KAFKA_BOOTSTRAP``: host:port list; embedded reads it from the stack state."""
    topic: str = "tweets"
    dlq_topic: str = "tweets.dlq"
    partitions: int = 3

    # Object storage (the master dataset)
    s3_endpoint: str | None = None
    """``LAMBDA_DEMO_S3_ENDPOINT``: S3 API URL; leave unset on AWS to use the real service."""
    s3_bucket: str = "lambda-demo"
    s3_region: str = "us-east-1"
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None

    # Warehouse (PostgreSQL standing in for Redshift)
    warehouse_dialect: Literal["postgres", "redshift"] = "postgres"
    warehouse_host: str | None = None
    warehouse_port: int | None = None
    warehouse_db: str = "warehouse"
    warehouse_schema: str = "lambda_demo"
    """``LAMBDA_DEMO_WAREHOUSE_SCHEMA``: every table lives in this schema (tests use their own)."""
    warehouse_user: str = "lambda"
    warehouse_password: SecretStr | None = None
    redshift_iam_role: str | None = None
    """``LAMBDA_DEMO_REDSHIFT_IAM_ROLE``: the role Redshift's COPY assumes to read the bucket."""

    # Spark
    spark_master: str = "local[2]"
    """``LAMBDA_DEMO_SPARK_MASTER``: the cluster profile reads its ``spark://`` master from the
    stack state unless this is set."""
    spark_driver_memory: str = "1g"
    trigger_seconds: float = 2.0
    """``LAMBDA_DEMO_TRIGGER_SECONDS``: the speed layer's processing-time trigger."""
    checkpoint_location: str | None = None
    """``LAMBDA_DEMO_CHECKPOINT_LOCATION``: a path or a URI (``s3a://bucket/prefix``); defaults
    to ``$LAMBDA_DEMO_HOME/checkpoints``, and to ``s3a://<bucket>/checkpoints`` on a cluster."""

    # Live source
    x_bearer_token: SecretStr | None = None
    """``LAMBDA_DEMO_X_BEARER_TOKEN``: X API v2 bearer token for ``lambda-demo live``."""
    x_api_url: str = X_API_URL
    """``LAMBDA_DEMO_X_API_URL``: where ``live`` sends tweepy's requests; the URL printed by
    ``lambda-demo xapi serve`` runs it offline against recorded tweets."""
    filter_rules: list[str] = ["apple OR iphone OR ipad lang:en"]

    @property
    def state_file(self) -> Path:
        return self.home / "stack" / "state.json"

    def log_file(self, process: str) -> Path:
        """Where a process's console output goes: each service's, and Spark's JVM's."""
        return self.home / "logs" / f"{process}.log"

    def endpoints(self) -> Endpoints:
        """Resolve every address and credential for the active profile."""
        base: dict = {}
        if self.profile in STACK_PROFILES:
            base = _embedded_endpoints(self.state_file, kafka_brokers(self.profile))
        elif self.profile == "docker":
            base = dict(DOCKER_ADDRESSES)
        explicit = {
            "kafka_bootstrap": self.kafka_bootstrap,
            "s3_endpoint": self.s3_endpoint,
            "s3_access_key": _reveal(self.s3_access_key),
            "s3_secret_key": _reveal(self.s3_secret_key),
            "warehouse_host": self.warehouse_host,
            "warehouse_port": self.warehouse_port,
            "warehouse_password": _reveal(self.warehouse_password),
        }
        base.update({key: value for key, value in explicit.items() if value is not None})
        required = ["kafka_bootstrap", "warehouse_host", "warehouse_port"]
        if self.profile == "docker":
            # Without explicit keys boto3 would fall back to ~/.aws and send real AWS
            # credentials to MinIO; the Compose env file always provides these.
            required += ["s3_access_key", "s3_secret_key", "warehouse_password"]
        missing = [key for key in required if base.get(key) is None]
        if missing:
            names = ", ".join(f"LAMBDA_DEMO_{key.upper()}" for key in missing)
            raise SettingsError(f"Profile {self.profile!r} needs {names}: set them in the env.")
        return Endpoints(
            kafka_bootstrap=base["kafka_bootstrap"],
            s3_endpoint=base.get("s3_endpoint"),
            s3_access_key=base.get("s3_access_key"),
            s3_secret_key=base.get("s3_secret_key"),
            warehouse_host=base["warehouse_host"],
            warehouse_port=int(base["warehouse_port"]),
            warehouse_password=base.get("warehouse_password"),
        )

    def kafka_servers(self) -> str:
        """Kafka's bootstrap servers, which need no other service's address.

        The Kafka clients (`lambda_demo.clients.kafka_io`) read only this, so they work on a
        stack that runs Kafka alone: notebook 06's three-broker cluster
        (``stack.up(settings, kafka_only=True)``) records no S3 or warehouse, which
        `endpoints` would require.
        """
        if self.kafka_bootstrap is not None:
            return self.kafka_bootstrap
        if self.profile in STACK_PROFILES:
            return _stack_bootstrap(self.state_file, kafka_brokers(self.profile))
        if self.profile == "docker":
            return DOCKER_ADDRESSES["kafka_bootstrap"]
        raise SettingsError(
            f"Profile {self.profile!r} needs LAMBDA_DEMO_KAFKA_BOOTSTRAP: set it in the env."
        )

    @property
    def checkpoints(self) -> str:
        """Where the speed layer's checkpoints go: a local path or a URI, never parsed here.

        Spark and `lambda_demo.clients.storage.delete_checkpoints` are the only readers, and
        both take ``s3a://`` URIs as well as paths (a ``Path`` would turn ``s3a://b`` into
        ``s3a:/b``). On a cluster they go to S3: the executors that write the state store's
        files are processes of their own, possibly on other machines.
        """
        if self.checkpoint_location:
            return self.checkpoint_location
        if self.profile == "cluster":
            return f"s3a://{self.s3_bucket}/checkpoints"
        return str(self.home / "checkpoints")

    def spark_url(self) -> str:
        """The Spark master: ``spark_master``, or the cluster profile's own ``spark://`` master."""
        if self.profile == "cluster" and "spark_master" not in self.model_fields_set:
            return f"spark://127.0.0.1:{_stack_state(self.state_file)['spark']['port']}"
        return self.spark_master


@dataclass(frozen=True)
class Endpoints:
    """Resolved addresses for one profile. ``repr`` hides the secrets."""

    kafka_bootstrap: str
    s3_endpoint: str | None
    s3_access_key: str | None
    s3_secret_key: str | None
    warehouse_host: str
    warehouse_port: int
    warehouse_password: str | None

    def __repr__(self) -> str:
        return (
            f"Endpoints(kafka={self.kafka_bootstrap}, s3={self.s3_endpoint}, "
            f"warehouse={self.warehouse_host}:{self.warehouse_port})"
        )


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


def kafka_brokers(profile: str) -> list[str]:
    """The names of a stack profile's Kafka brokers in ``state.json`` (and in `stack status`)."""
    if profile == "cluster":
        return [f"kafka-{node}" for node in range(1, CLUSTER_BROKERS + 1)]
    return ["kafka"]


def _stack_state(state_file: Path) -> dict:
    if not state_file.exists():
        raise SettingsError(
            f"No embedded stack recorded in {state_file.parent}: run `lambda-demo stack up`."
        )
    return json.loads(state_file.read_text())


def _stack_bootstrap(state_file: Path, brokers: list[str]) -> str:
    """The recorded brokers' addresses, comma-separated (Kafka's bootstrap list)."""
    state = _stack_state(state_file)
    if any(name not in state for name in brokers):
        raise SettingsError(
            f"The stack in {state_file.parent} was not started with this profile: run "
            "`lambda-demo stack up` with the same LAMBDA_DEMO_PROFILE."
        )
    return ",".join(f"127.0.0.1:{state[name]['port']}" for name in brokers)


def _embedded_endpoints(state_file: Path, brokers: list[str]) -> dict:
    state = _stack_state(state_file)
    if "s3" not in state or "postgres" not in state:
        raise SettingsError(
            f"The stack in {state_file.parent} runs Kafka alone (started with kafka_only): it "
            "has no S3 or warehouse. Use the Kafka clients, or settings of a whole stack."
        )
    return {
        "kafka_bootstrap": _stack_bootstrap(state_file, brokers),
        "s3_endpoint": f"http://127.0.0.1:{state['s3']['port']}",
        "s3_access_key": state["s3"]["access_key"],
        "s3_secret_key": state["s3"]["secret_key"],
        "warehouse_host": "127.0.0.1",
        "warehouse_port": state["postgres"]["port"],
        "warehouse_password": state["postgres"]["password"],
    }


def isolated_settings(home: Path, *, prefix: str = "test", **overrides: object) -> Settings:
    """Settings with a topic, bucket, schema and checkpoints no one else uses.

    Tests and benchmarks share one running stack; unique names keep their data apart.
    """
    tag = f"{prefix}-{uuid.uuid4().hex[:8]}"
    values: dict[str, object] = {
        "home": home,
        "topic": f"tweets-{tag}",
        "dlq_topic": f"tweets-{tag}.dlq",
        "s3_bucket": f"lambda-demo-{tag}",
        "warehouse_schema": tag.replace("-", "_"),
        "checkpoint_location": None,  # the profile's default, under a folder of their own
    }
    values.update(overrides)
    settings = Settings(**values)
    if settings.checkpoint_location is not None:
        return settings
    return settings.model_copy(update={"checkpoint_location": f"{settings.checkpoints}/{tag}"})


@cache
def get_settings() -> Settings:
    """The process-wide settings (read once; tests build their own ``Settings``)."""
    return Settings()
