"""A failed Spark query, from the command line: its root cause in one line, no JVM frames.

The speed layer's write is made to fail in PostgreSQL (a CHECK constraint no row meets), so
the error travels PostgreSQL -> psycopg2 -> the foreachBatch function -> py4j -> the JVM's
StreamingQueryException -> pyspark -> `lambda-demo speed`, which must print the first link.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from helpers import DAY0, Delivery, produce, tweet

from lambda_demo.clients import warehouse
from lambda_demo.settings import Settings

pytestmark = pytest.mark.integration


def test_failed_spark_query_is_one_line_with_its_root_cause(
    settings: Settings, cli_env: dict[str, str]
) -> None:
    produce(settings, [Delivery(DAY0 + timedelta(minutes=i), tweet(i, "Bern")) for i in range(5)])
    warehouse.ensure_schema(settings)
    conn = warehouse.connect(settings, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("ALTER TABLE speed_view ADD CONSTRAINT no_rows CHECK (tweet_count < 0)")
    conn.close()
    command = [sys.executable, "-m", "lambda_demo.cli", "speed", "--once"]

    done = subprocess.run(command, env=cli_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    assert "\tat " not in done.stderr and "JVM stacktrace" not in done.stderr
    error, *rest = done.stderr.strip().splitlines()
    assert error == (
        "error: The Spark query failed: psycopg2.errors.CheckViolation: new row for relation "
        '"speed_view" violates check constraint "no_rows"'
    )
    assert rest == [f"  the full error is in {settings.home / 'logs' / 'cli.log'}"]
    cli_log = (settings.home / "logs" / "cli.log").read_text()
    assert "StreamingQueryException" in cli_log  # the whole story is kept for whoever looks

    verbose = subprocess.run(
        [*command[:3], "-v", *command[3:]], env=cli_env, capture_output=True, text=True
    )
    assert verbose.returncode == 2
    assert "Traceback (most recent call last)" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1] == error
