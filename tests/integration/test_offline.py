"""After `lambda-demo prefetch`, the whole demo runs with package downloads blocked.

This is the workshop's offline promise: a participant prefetches at home, and in the room
nothing is downloaded. Every JVM that could download something (Ivy, for Spark's connector
and for the Kafka and S3Proxy jars; Kafka; S3Proxy) gets an HTTP(S) proxy on a closed port
through ``JAVA_TOOL_OPTIONS``, so any download fails at once instead of silently succeeding;
pip is told to use no index, and the ``mvn`` first on the PATH is a stub that records being
called and fails. The demo runs in a fresh ``LAMBDA_DEMO_HOME``, so nothing is
reused but the caches that prefetch fills.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import private_stack, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

_CLOSED_PROXY = (
    "-Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort=9 -Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort=9"
)


def _maven_stub(folder: Path) -> Path:
    """A folder whose ``mvn`` writes ``mvn-was-called`` next to itself and fails."""
    stub = folder / "mvn"
    stub.write_text(f'#!/bin/sh\ntouch "{folder}/mvn-was-called"\nexit 1\n')
    stub.chmod(0o755)
    return folder


def offline_env(home: Path) -> dict[str, str]:
    """The environment of a participant whose machine cannot download anything."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDA_DEMO_")}
    env.update(
        LAMBDA_DEMO_HOME=str(home),
        CI="1",  # no Spark UI port
        JAVA_TOOL_OPTIONS=_CLOSED_PROXY,
        PIP_NO_INDEX="1",
        PATH=f"{_maven_stub(home)}{os.pathsep}{os.environ['PATH']}",
    )
    return env


def test_demo_runs_offline_after_prefetch() -> None:
    with private_stack(start=False) as settings:  # `demo` starts it; reset at the end
        home = settings.home
        online = {**os.environ, "LAMBDA_DEMO_HOME": str(home), "CI": "1"}
        fetched = run_cli(online, "prefetch", cwd=home, timeout=600)
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr[-3000:]
        for item in ("Kafka broker jars", "S3Proxy jars", "Spark Kafka connector"):
            assert f"prefetch: {item}" in fetched.stdout

        demo = run_cli(offline_env(home), "demo", "--speedup", "20000", cwd=home, timeout=780)
        output = demo.stdout + demo.stderr
        assert demo.returncode == 0, output[-4000:]
        assert "check: OK" in demo.stdout, output[-4000:]
        assert not (home / "mvn-was-called").exists(), "the tutorial called Maven"
        # The proxy really was in force: every JVM announced it, in its own log.
        for jvm in ("kafka", "s3", "spark"):
            log = (home / "logs" / f"{jvm}.log").read_text(errors="replace")
            assert "Picked up JAVA_TOOL_OPTIONS" in log, jvm
