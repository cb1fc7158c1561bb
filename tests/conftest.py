"""Shared fixtures: one real embedded stack per test session, isolated names per test.

The stack (Kafka, S3Proxy, PostgreSQL) starts once in a temporary ``LAMBDA_DEMO_HOME``;
each test that needs it gets its own topics, bucket, warehouse schema and checkpoint
directory, so tests never see each other's data. The helpers behind these fixtures live in
``tests/helpers.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import env_for, isolated_settings, private_stack, ready
from helpers import new_home as new_home  # re-exported: older tests import it from conftest

from lambda_demo.settings import Settings


@pytest.fixture(scope="session")
def stack_home() -> Iterator[Path]:
    """Start the embedded stack once for the session; stop and delete it at the end."""
    with private_stack() as settings:
        yield settings.home


@pytest.fixture
def settings(stack_home: Path) -> Settings:
    """Isolated settings on the running stack, with topics, bucket and schema created."""
    return ready(isolated_settings(stack_home))


@pytest.fixture
def cli_env(settings: Settings) -> dict[str, str]:
    """Environment variables that point a `lambda-demo` subprocess at the same settings."""
    return env_for(settings)


@pytest.fixture(scope="session")
def spark(stack_home: Path):
    from lambda_demo.clients.spark import get_spark

    session = get_spark(Settings(home=stack_home))
    yield session
    session.stop()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No LAMBDA_DEMO_* variable and no .env file: Settings sees only what a test passes."""
    for name in [n for n in os.environ if n.startswith("LAMBDA_DEMO_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch
