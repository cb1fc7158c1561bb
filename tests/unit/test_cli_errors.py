"""The CLI's error surface: an expected failure is one or two lines of words and a non-zero exit.

No stack is needed: each command runs as a subprocess with ``LAMBDA_DEMO_HOME`` in a temporary
directory, either empty (never started) or with a ``state.json`` naming ports nothing listens
on (a stopped stack), so every service refuses at once.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lambda_demo.errors import (
    ServiceDownError,
    SparkQueryError,
    UsageError,
    explain,
    spark_cause,
)
from lambda_demo.settings import Settings
from lambda_demo.stack.process import free_port

REPO = Path(__file__).resolve().parents[2]


def _cli(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str, float]:
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "LAMBDA_DEMO_HOME": str(home),
        "LAMBDA_DEMO_PROFILE": "embedded",
        **(env or {}),
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "lambda_demo.cli", *args],
        env=environment,
        cwd=home,  # no .env of the checkout
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def _assert_in_words(rc: int, out: str, err: str, *phrases: str) -> None:
    """Non-zero exit, no traceback, at most two lines on stderr, naming each phrase."""
    assert rc != 0, out + err
    assert "Traceback" not in out + err, err
    assert "\tat " not in out + err, err
    lines = err.strip().splitlines()
    if lines[0].startswith("usage: "):  # argparse: the usage (wrapped), then the error
        lines = [line for line in lines[1:] if not line.startswith(" ")]
    assert 1 <= len(lines) <= 2, err
    for phrase in phrases:
        assert phrase in err, err


@pytest.fixture
def empty_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def stopped_home(tmp_path: Path) -> Path:
    """A home whose recorded stack is not running: every port refuses connections."""
    home = tmp_path / "stopped"
    (home / "stack").mkdir(parents=True)
    state = {
        "kafka": {"port": free_port(), "controller_port": free_port(), "pid": None},
        "s3": {"port": free_port(), "access_key": "a", "secret_key": "b", "pid": None},
        "postgres": {"port": free_port(), "password": "p", "pid": None},
    }
    for entry in state.values():
        entry["started"] = None
    (home / "stack" / "state.json").write_text(json.dumps(state))
    return home


def _port(home: Path, service: str) -> int:
    return json.loads((home / "stack" / "state.json").read_text())[service]["port"]


# --- bad arguments -----------------------------------------------------------------------------


def test_negative_tweet_count_is_refused_in_words(empty_home: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "x.jsonl.gz"
    rc, out, err, _ = _cli(
        empty_home, "sample", "generate", "--tweets", "-1", "--days", "1", "--seed", "1",
        "--out", str(out_file),
    )  # fmt: skip
    _assert_in_words(rc, out, err, "argument --tweets: must be 0 or more, got -1")
    assert not out_file.exists()


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["sample", "generate", "--days", "0", "--out", "x.jsonl"], "--days: must be 1 or more"),
        (["replay", "--speedup", "-2"], "--speedup: must be 0 or more, got -2"),
        (["replay", "--start", "soon"], "'soon' is not a date and time: write it as ISO 8601"),
        (["speed", "--trigger-seconds", "0"], "--trigger-seconds: must be more than 0"),
        (["query", "--top", "zero"], "--top: 'zero' is not a whole number"),
    ],
)
def test_out_of_range_values_are_refused_in_words(
    empty_home: Path, args: list[str], phrase: str
) -> None:
    rc, out, err, _ = _cli(empty_home, *args)
    _assert_in_words(rc, out, err, phrase)


def test_cutoff_that_is_not_a_date(empty_home: Path) -> None:
    rc, out, err, _ = _cli(empty_home, "batch", "--cutoff", "not-a-date")
    _assert_in_words(rc, out, err, "'not-a-date' is not a date: write it as YYYY-MM-DD")


def test_unwritable_output_path_names_the_path(empty_home: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    rc, out, err, _ = _cli(empty_home, "sample", "generate", "--out", str(blocker / "x.jsonl"))
    _assert_in_words(rc, out, err, f"Cannot use {blocker}", "Check the path")


# --- a stack that is not running -----------------------------------------------------------------


def test_never_started_stack_says_how_to_start_it(empty_home: Path) -> None:
    rc, out, err, _ = _cli(empty_home, "query")
    _assert_in_words(rc, out, err, "run `lambda-demo stack up`")


@pytest.mark.parametrize(
    ("command", "service", "title"),
    [
        (["query"], "postgres", "PostgreSQL"),
        (["query", "--top", "3", "--json"], "postgres", "PostgreSQL"),
        (["check"], "kafka", "Kafka"),
        (["batch"], "postgres", "PostgreSQL"),
        (["status"], "postgres", "PostgreSQL"),
        (["replay"], "kafka", "Kafka"),
    ],
)
def test_stopped_service_is_named_with_its_address_and_the_fix(
    stopped_home: Path, command: list[str], service: str, title: str
) -> None:
    rc, out, err, seconds = _cli(stopped_home, *command)
    port = _port(stopped_home, service)
    _assert_in_words(
        rc,
        out,
        err,
        f"{title} at 127.0.0.1:{port} is not answering",
        "start the stack with `lambda-demo stack up`",
    )
    assert rc == 2
    assert len(err.strip().splitlines()) == 1
    assert "ERROR" not in err  # no library log lines (kafka-python logs each refusal)
    assert seconds < 15, f"a stopped service took {seconds:.0f} s to report"


def test_verbose_shows_the_traceback_and_the_log_keeps_it(stopped_home: Path) -> None:
    rc, _out, err, _ = _cli(stopped_home, "-v", "query")
    assert rc == 2
    assert "Traceback (most recent call last)" in err
    assert "psycopg2.OperationalError" in err
    assert err.strip().splitlines()[-1].startswith("error: PostgreSQL at 127.0.0.1:")

    rc, _out, err, _ = _cli(stopped_home, "query")
    assert "Traceback" not in err
    log = (stopped_home / "logs" / "cli.log").read_text()
    assert log.count("ERROR __main__: lambda-demo -v query failed\nTraceback") == 1
    assert log.count("ERROR __main__: lambda-demo query failed\nTraceback") == 1  # without -v


def test_port_taken_by_another_program(stopped_home: Path) -> None:
    if shutil.which("java") is None:
        pytest.skip("stack up checks for Java first")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", _port(stopped_home, "kafka")))
        squatter.listen()
        rc, out, err, _ = _cli(stopped_home, "stack", "up")
    _assert_in_words(rc, out, err, "is taken by another program", "lambda-demo stack reset")


def test_missing_java_says_what_to_install(empty_home: Path) -> None:
    rc, out, err, _ = _cli(
        empty_home, "stack", "up", env={"PATH": str(Path(sys.executable).parent)}
    )
    _assert_in_words(rc, out, err, "Java 17+ is needed", "Install OpenJDK 17")


def test_invalid_setting_is_named(empty_home: Path) -> None:
    rc, out, err, _ = _cli(empty_home, "query", env={"LAMBDA_DEMO_PROFILE": "cloud"})
    _assert_in_words(rc, out, err, "LAMBDA_DEMO_PROFILE", "fix it in the environment")


def test_unexpected_error_is_one_line_and_points_at_the_log(empty_home: Path) -> None:
    (empty_home / "stack").mkdir()
    (empty_home / "stack" / "state.json").write_text("{not json")
    rc, out, err, _ = _cli(empty_home, "query")
    _assert_in_words(rc, out, err, "unexpected JSONDecodeError", str(empty_home / "logs"))
    assert rc == 1


# --- the translation itself -------------------------------------------------------------------


def test_explain_names_the_service_of_each_library(stopped_home: Path) -> None:
    import psycopg2
    from botocore.exceptions import EndpointConnectionError
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError

    settings = Settings(home=stopped_home)
    refused = psycopg2.OperationalError('connection to server at "x" failed: Connection refused')
    cases = {
        "PostgreSQL": refused,
        "Kafka": KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:1"),
        "S3": EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    }
    for title, exc in cases.items():
        error = explain(exc, settings)
        assert isinstance(error, ServiceDownError), title
        assert f"{title} at " in str(error) and "127.0.0.1:" in str(error), error
        assert "start the stack with `lambda-demo stack up`" in str(error)
    assert isinstance(explain(KafkaConnectionError("refused"), settings), ServiceDownError)
    assert explain(ValueError("a bug"), settings) is None
    assert isinstance(explain(FileNotFoundError(2, "No such file", "/x"), settings), UsageError)


def test_explain_turns_a_py4j_failure_into_one_line() -> None:
    from py4j.protocol import Py4JError

    error = explain(Py4JError("An error occurred while calling o42.start"))
    assert isinstance(error, SparkQueryError)
    assert "\n" not in str(error)


FOREACH_BATCH_FAILURE = """\
[STREAM_FAILED] Query [id = 1f, runId = 2e] terminated with exception: \
[FOREACH_BATCH_USER_FUNCTION_ERROR] An error occurred in the user provided function in \
foreach batch sink. Reason: An exception was raised by the Python Proxy. Return Message: \
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/py4j/clientserver.py", line 644, in _call_proxy
    return_value = getattr(self.pool[obj_id], method)(*params)
                   ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/work/lambda_demo/speed/sink.py", line 120, in __call__
    cur.execute(query)
psycopg2.errors.UndefinedColumn: column "likes_sum" of relation "speed_view" does not exist
LINE 1: INSERT INTO speed_view (deployment, likes_sum) VALUES
                                            ^

 SQLSTATE: 39000

JVM stacktrace:
org.apache.spark.sql.streaming.StreamingQueryException
\tat org.apache.spark.sql.execution.streaming.StreamExecution.runStream(StreamExecution.scala:1)
"""

JAVA_CHAIN = """\
[STREAM_FAILED] Query [id = 1f, runId = 2e] terminated with exception: Job aborted.
Caused by: org.apache.spark.SparkException: Job aborted due to stage failure: lost task
\tat org.apache.spark.scheduler.DAGScheduler.failJobAndIndependentStages(DAGScheduler.scala:1)
\t... 12 more
Caused by: java.io.FileNotFoundException: /tmp/checkpoint/offsets/3 (No such file or directory)
\tat java.base/java.io.FileInputStream.open0(Native Method)
"""


def test_spark_cause_is_the_root_cause_line() -> None:
    assert spark_cause(FOREACH_BATCH_FAILURE) == (
        'psycopg2.errors.UndefinedColumn: column "likes_sum" of relation "speed_view" '
        "does not exist"
    )
    assert spark_cause(JAVA_CHAIN) == (
        "java.io.FileNotFoundException: /tmp/checkpoint/offsets/3 (No such file or directory)"
    )
    assert spark_cause("[STREAM_FAILED] Query x terminated with exception: boom") == (
        "[STREAM_FAILED] Query x terminated with exception: boom"
    )
