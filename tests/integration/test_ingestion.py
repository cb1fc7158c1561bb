"""Replay into the real Kafka: exactly the valid records in `tweets`, the rest in the DLQ."""

from __future__ import annotations

import gzip
import json
import subprocess
from datetime import UTC, datetime

import pytest
from helpers import all_records, cli_command, topic_size, wait_until

from lambda_demo.ingestion.replay import SAMPLE_FILE, replay
from lambda_demo.settings import Settings

pytestmark = pytest.mark.integration


def _expected(lines: list[bytes]) -> tuple[dict[int, int], set[int]]:
    """Independent expectations: valid line -> ingest ms (a running max of created_at)."""
    valid: dict[int, int] = {}
    invalid: set[int] = set()
    clock = None
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            data = record["data"]
            created = datetime.strptime(data["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
            created = created.replace(tzinfo=UTC)
            users = {u["id"]: u for u in record["includes"]["users"]}
            metrics = data["public_metrics"]
            followers = users[data["author_id"]]["public_metrics"]["followers_count"]
            counts = [metrics["retweet_count"], metrics["like_count"], followers]
            ok = (
                data["id"].isascii()
                and data["id"].isdigit()
                and all(type(c) is int and c >= 0 for c in counts)
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            created, ok = None, False
        if created is not None:
            clock = created if clock is None else max(clock, created)
        if ok:
            valid[number] = int(clock.timestamp() * 1000)
        else:
            invalid.add(number)
    return valid, invalid


@pytest.fixture(scope="module")
def sample_lines() -> list[bytes]:
    with gzip.open(SAMPLE_FILE, "rb") as handle:
        return [line.rstrip(b"\n") for line in handle]


def test_replay_splits_valid_and_invalid_with_ingest_times(
    settings: Settings, sample_lines: list[bytes]
) -> None:
    counts = replay(settings=settings, progress=False)
    valid, invalid = _expected(sample_lines)
    assert counts.as_dict() == {
        "read": len(valid) + len(invalid),
        "produced": len(valid),
        "dead_lettered": len(invalid),
    }
    tweets = all_records(settings, settings.topic)
    got = {int(dict(r.headers)["replay-line"]): r for r in tweets}
    assert len(got) == len(tweets), "a line was delivered twice"
    assert set(got) == set(valid)
    assert {n: r.timestamp for n, r in got.items()} == valid
    for n, record in got.items():
        assert record.key == json.loads(sample_lines[n])["data"]["id"].encode()
        assert json.loads(record.value)["v"] == 1

    dlq = all_records(settings, settings.dlq_topic)
    dead = {int(dict(r.headers)["replay-line"]): r for r in dlq}
    assert set(dead) == invalid
    for n, record in dead.items():
        assert record.value == sample_lines[n], "the DLQ keeps the original bytes"
        assert dict(record.headers)["reason"]

    # A second run of the same replay finds everything already in Kafka.
    assert replay(settings=settings, progress=False).as_dict() == {
        "read": 0,
        "produced": 0,
        "dead_lettered": 0,
    }


def test_interrupted_replay_resumes_without_duplicates(
    settings: Settings, cli_env: dict[str, str]
) -> None:
    process = subprocess.Popen(
        cli_command("replay", "--speedup", "0", "--json"), env=cli_env, stdout=subprocess.DEVNULL
    )

    def replaying_and_2000_in_kafka() -> bool:
        assert process.poll() is None, "the replay ended before it was killed"
        return topic_size(settings) > 2000

    try:
        wait_until(replaying_and_2000_in_kafka, 60, "the replay to be 2000 records in")
    finally:
        process.kill()  # SIGKILL, unless the process is already gone
        process.wait()
    partial = len(all_records(settings, settings.topic))
    assert partial > 0

    counts = replay(settings=settings, progress=False)
    tweets = all_records(settings, settings.topic)
    lines = [int(dict(r.headers)["replay-line"]) for r in tweets]
    assert len(lines) == len(set(lines)), "resumed replay duplicated records"
    valid = counts.produced + partial
    assert len(tweets) == valid
    assert partial < valid
