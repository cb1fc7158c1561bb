"""A resumed replay sends exactly the lines Kafka lacks, holes included (issue 16)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import all_records
from kafka.errors import KafkaTimeoutError
from kafka.future import Future

from lambda_demo.clients import kafka_io
from lambda_demo.contract import FlatTweet, Rejected, parse_api_tweet
from lambda_demo.ingestion import replay as replay_module
from lambda_demo.ingestion import sample
from lambda_demo.ingestion.replay import read_lines, replay
from lambda_demo.settings import Settings

pytestmark = pytest.mark.integration


class _ExpiringProducer:
    """A real producer whose batches for some lines expire, as after a broker restart: the
    send fails (and is counted), while the lines after it are delivered."""

    def __init__(self, real: Any, expire: set[int]) -> None:
        self.real, self.expire = real, expire

    def send(self, topic: str, **kwargs: Any) -> Future:
        line = int(dict(kwargs["headers"])["replay-line"])
        if line in self.expire:
            return Future().failure(KafkaTimeoutError(f"batch of line {line} expired"))
        return self.real.send(topic, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_resumed_replay_fills_the_holes_and_duplicates_nothing(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tweets.jsonl"
    sample.write(path, tweets=400, days=1, seed=5)
    parsed = [parse_api_tweet(line) for line in read_lines(path)]
    valid = {n for n, p in enumerate(parsed) if isinstance(p, FlatTweet)}
    invalid = {n for n, p in enumerate(parsed) if isinstance(p, Rejected)}
    holes = set(range(100, 130)) | {250, 399}  # lost in the middle of every partition

    real_producer = kafka_io.producer
    monkeypatch.setattr(
        replay_module.kafka_io,
        "producer",
        lambda s: _ExpiringProducer(real_producer(s), holes),
    )
    first = replay(files=[path], settings=settings, progress=False)
    assert first.failed == len(holes)
    monkeypatch.setattr(replay_module.kafka_io, "producer", real_producer)

    resumed = replay(files=[path], settings=settings, progress=False)
    assert resumed.failed == 0
    assert resumed.produced + resumed.dead_lettered == len(holes & (valid | invalid))

    def lines(topic: str) -> list[int]:
        return [int(dict(r.headers)["replay-line"]) for r in all_records(settings, topic)]

    tweets, dead = lines(settings.topic), lines(settings.dlq_topic)
    assert sorted(tweets) == sorted(valid), "every valid line exactly once"
    assert sorted(dead) == sorted(invalid), "every invalid line dead-lettered exactly once"
