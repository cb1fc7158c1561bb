"""The embedded stack is real: Kafka, S3, PostgreSQL and Spark each do their job."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
from helpers import all_records, private_stack

from lambda_demo import stack
from lambda_demo.clients import kafka_io, storage, warehouse
from lambda_demo.settings import Settings

pytestmark = pytest.mark.integration


def _consume_all(settings: Settings, group: str, expect: int) -> list[bytes]:
    consumer = kafka_io.consumer(settings, group_id=group, consumer_timeout_ms=5000)
    with contextlib.closing(consumer):
        consumer.subscribe([settings.topic])
        values = []
        for record in consumer:
            values.append(record.value)
            if len(values) == expect:
                break
        consumer.commit()
    return values


def test_kafka_group_resumes_after_committed_offsets(settings: Settings) -> None:
    producer = kafka_io.producer(settings)
    for i in range(10):
        producer.send(settings.topic, key=str(i).encode(), value=f"first-{i}".encode())
    producer.flush()
    first = _consume_all(settings, "round-trip", expect=10)
    assert sorted(first) == sorted(f"first-{i}".encode() for i in range(10))

    for i in range(5):
        producer.send(settings.topic, key=str(i).encode(), value=f"second-{i}".encode())
    producer.flush()
    producer.close()
    # A new member of the same group starts after the committed offsets: only the new five.
    second = _consume_all(settings, "round-trip", expect=5)
    assert sorted(second) == sorted(f"second-{i}".encode() for i in range(5))


def test_s3_put_list_get(settings: Settings) -> None:
    client = storage.s3_client(settings)
    body = 'Zürich 🌍; "quoted"\n'.encode()
    client.put_object(Bucket=settings.s3_bucket, Key="a/b.txt", Body=body)
    listed = client.list_objects_v2(Bucket=settings.s3_bucket, Prefix="a/")
    assert [o["Key"] for o in listed["Contents"]] == ["a/b.txt"]
    assert client.get_object(Bucket=settings.s3_bucket, Key="a/b.txt")["Body"].read() == body


def test_sql_round_trip(settings: Settings) -> None:
    conn = warehouse.connect(settings)
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id BIGINT, location TEXT)")
        cur.execute("INSERT INTO t VALUES (%s, %s)", (2**62, "São Paulo; SP"))
        cur.execute("SELECT id, location FROM t")
        assert cur.fetchall() == [(2**62, "São Paulo; SP")]
    conn.close()


def test_spark_reads_exactly_what_was_produced(settings: Settings, spark) -> None:
    producer = kafka_io.producer(settings)
    for i in range(137):
        producer.send(settings.topic, key=str(i).encode(), value=b"x")
    producer.flush()
    producer.close()
    name = f"count_{uuid.uuid4().hex[:8]}"
    query = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", kafka_io.bootstrap(settings))
        .option("subscribe", settings.topic)
        .option("startingOffsets", "earliest")
        .load()
        .writeStream.format("memory")
        .queryName(name)
        .option("checkpointLocation", str(Path(settings.checkpoints) / name))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    assert spark.sql(f"SELECT count(*) AS n FROM {name}").first().n == 137


def test_state_survives_down_and_up() -> None:
    """A stack of its own: stop it and start it again, and every service still has the data."""
    with private_stack() as settings:
        producer = kafka_io.producer(settings)
        producer.send(settings.topic, key=b"k", value=b"kept").get(timeout=30)
        producer.close()
        storage.s3_client(settings).put_object(Bucket=settings.s3_bucket, Key="k", Body=b"kept")
        conn = warehouse.connect(settings)
        with conn, conn.cursor() as cur:
            cur.execute("CREATE SCHEMA IF NOT EXISTS lambda_demo")
            cur.execute("CREATE TABLE lambda_demo.kept (v TEXT)")
            cur.execute("INSERT INTO lambda_demo.kept VALUES ('kept')")
        conn.close()
        ports_before = {s.name: s.address for s in stack.status(settings)}

        stack.down(settings)
        assert not any(s.up for s in stack.status(settings))
        stack.up(settings)

        assert {s.name: s.address for s in stack.status(settings)} == ports_before
        assert [r.value for r in all_records(settings, settings.topic)] == [b"kept"]
        body = storage.s3_client(settings).get_object(Bucket=settings.s3_bucket, Key="k")
        assert body["Body"].read() == b"kept"
        conn = warehouse.connect(settings)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT v FROM lambda_demo.kept")
            assert cur.fetchall() == [("kept",)]
        conn.close()


def test_status_reports_a_dead_service(tmp_path: Path, stack_home: Path) -> None:
    """status names the service that died instead of silently trusting a recorded pid."""
    home = tmp_path / "copy"
    (home / "stack").mkdir(parents=True)
    state = json.loads((stack_home / "stack" / "state.json").read_text())
    state["s3"]["pid"] = 2**22 + 12345  # a pid that is not running
    (home / "stack" / "state.json").write_text(json.dumps(state))
    statuses = {s.name: s for s in stack.status(Settings(home=home))}
    assert statuses["kafka"].up and statuses["postgres"].up
    assert not statuses["s3"].up and "died" in (statuses["s3"].problem or "")


def test_stack_signals_only_the_processes_it_started() -> None:
    """A pid in state.json that now belongs to another program survives up, down and reset;
    services recorded without a start time are recognised by their command line; and
    `stack down` with a client still connected to PostgreSQL returns in seconds."""
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        with private_stack(start=False) as settings:
            started = psutil.Process(stranger.pid).create_time()
            # What a stack left behind before a reboot: its pids now belong to someone else.
            state = {
                "kafka": {"pid": stranger.pid, "started": started - 3600.0},  # an older process
                "s3": {"pid": stranger.pid},  # written before identities were recorded
            }
            settings.state_file.parent.mkdir(parents=True)
            settings.state_file.write_text(json.dumps(state))
            stack.down(settings)
            assert stranger.poll() is None, "stack down signalled a process it did not start"

            statuses = stack.up(settings)
            assert stranger.poll() is None, "stack up signalled a process it did not start"
            assert all(s.up for s in statuses), statuses

            # A state.json from before start times were recorded: processes whose command lines
            # name this stack's home are adopted as its services (the stranger's does not).
            recorded = json.loads(settings.state_file.read_text())
            for entry in recorded.values():
                entry.pop("started", None)
            settings.state_file.write_text(json.dumps(recorded))

            client = warehouse.connect(settings)  # an idle client, as a notebook keeps one
            begun = time.monotonic()
            stack.down(settings)
            seconds = time.monotonic() - begun
            assert seconds < 10, f"stack down took {seconds:.1f} s with a client connected"
            assert not any(s.up for s in stack.status(settings))
            client.close()
            assert stranger.poll() is None
        assert stranger.poll() is None, "stack reset signalled a process it did not start"
    finally:
        stranger.kill()
        stranger.wait()
