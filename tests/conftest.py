"""Shared fixtures: one real embedded stack per test session, isolated names per test.

The stack (Kafka, S3Proxy, PostgreSQL) starts once in a temporary ``LAMBDA_DEMO_HOME``;
each test that needs it gets its own topics, bucket, warehouse schema and checkpoint
directory, so tests never see each other's data.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lambda_demo.settings import Settings
from lambda_demo.settings import isolated_settings as package_isolated_settings


def new_home() -> Path:
    """A fresh LAMBDA_DEMO_HOME outside pytest's tmp tree.

    Under root, PostgreSQL runs as an unprivileged user that must traverse the path, and
    pytest resets its own ``pytest-of-<user>`` folder to mode 0700 at every start.
    """
    return Path(tempfile.mkdtemp(prefix="lambda-demo-test-"))


@pytest.fixture(scope="session")
def stack_home() -> Iterator[Path]:
    """Start the embedded stack once for the session; stop and delete it at the end."""
    from lambda_demo import stack

    home = new_home()
    settings = Settings(home=home)
    stack.up(settings)
    yield home
    stack.reset(settings)


def isolated_settings(home: Path, **overrides: object) -> Settings:
    """Settings with names no other test uses (short trigger for streaming tests)."""
    return package_isolated_settings(home, **{"trigger_seconds": 0.5, **overrides})


@pytest.fixture
def settings(stack_home: Path) -> Settings:
    """Isolated settings on the running stack, with topics, bucket and schema created."""
    from lambda_demo.clients.kafka_io import ensure_topics
    from lambda_demo.clients.storage import ensure_bucket
    from lambda_demo.clients.warehouse import ensure_schema

    s = isolated_settings(stack_home)
    ensure_topics(s)
    ensure_bucket(s)
    ensure_schema(s)
    return s


@pytest.fixture
def cli_env(settings: Settings) -> dict[str, str]:
    """Environment variables that point a `lambda-demo` subprocess at the same settings."""
    return env_for(settings)


def env_for(settings: Settings) -> dict[str, str]:
    """The process environment plus the ``LAMBDA_DEMO_*`` variables that select ``settings``."""
    env = dict(os.environ)
    for name in ("home", "topic", "dlq_topic", "s3_bucket", "warehouse_schema"):
        env[f"LAMBDA_DEMO_{name.upper()}"] = str(getattr(settings, name))
    env["LAMBDA_DEMO_CHECKPOINT_LOCATION"] = settings.checkpoints
    return env


@pytest.fixture(scope="session")
def spark(stack_home: Path):
    from lambda_demo.clients.spark import get_spark

    session = get_spark(Settings(home=stack_home))
    yield session
    session.stop()
