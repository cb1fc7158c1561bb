"""Benchmark 1: replay throughput at speedup 0 vs the 2017 producer and Kafka's own tool."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from pathlib import Path

from kafka import KafkaProducer

from benchmarks.common import isolated, profiled, summary, timed
from lambda_demo.clients import kafka_io
from lambda_demo.contract import FlatTweet, parse_api_tweet
from lambda_demo.ingestion.replay import read_lines, replay
from lambda_demo.stack import jvm

TARGET_TWEETS_PER_SECOND = 25_000
TARGET_RATIO_VS_PRODUCER_PERFORMANCE = 0.25


def ours(home: Path, sample: Path) -> tuple[float, int, object]:
    """The package's replay: parse + validate + serialize + produce, until every ack is in."""
    settings = isolated(home)
    seconds, counts = timed(lambda: replay([sample], settings=settings, progress=False))
    return seconds, counts.read, settings


def the_2017_way(home: Path, sample: Path, limit: int = 2_000) -> tuple[float, int]:
    """One unbatched ``send(...).get()`` per record of a ``;``-joined string (the blog's code).

    A per-record round trip has a flat rate, so the first ``limit`` lines are enough.
    """
    settings = isolated(home)
    producer = KafkaProducer(bootstrap_servers=kafka_io.bootstrap(settings))

    def run() -> int:
        sent = 0
        for raw in itertools.islice(read_lines(sample), limit):
            try:
                data = json.loads(raw)["data"]
            except (ValueError, KeyError, TypeError):
                continue
            fields = [data["id"], data["author_id"], data["created_at"], data["text"]]
            value = ";".join(str(f) for f in fields).encode("utf-8")
            producer.send(settings.topic, value=value).get()
            sent += 1
        return sent

    seconds, sent = timed(run)
    producer.close()
    return seconds, sent


def mean_flat_size(sample: Path, limit: int | None = None) -> int:
    """Mean size of the flat records of the sample's valid lines (of its first ``limit``)."""
    sizes = [
        len(parsed.to_json_bytes())
        for raw in itertools.islice(read_lines(sample), limit)
        if isinstance(parsed := parse_api_tweet(raw), FlatTweet)
    ]
    return round(sum(sizes) / len(sizes))


def producer_performance(home: Path, records: int, record_size: int) -> float:
    """Kafka's ``ProducerPerformance`` at the same record size; returns its records/s."""
    settings = isolated(home)
    command = [
        "java",
        "-cp",
        jvm.classpath("kafka"),
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        settings.topic,
        "--num-records",
        str(records),
        "--record-size",
        str(record_size),
        "--throughput",
        "-1",
        "--producer-props",
        f"bootstrap.servers={kafka_io.bootstrap(settings)}",
        "acks=all",
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    # The last line: "N records sent, X records/sec (Y MB/sec), ..."
    match = re.findall(r"records sent, ([\d.]+) records/sec", out)
    return float(match[-1])


def run(home: Path, sample: Path, *, repeats: int, profile_sample: Path) -> dict:
    ours_rates, old_rates, tool_rates = [], [], []
    size = mean_flat_size(sample)
    settings = None
    for _ in range(repeats):  # interleaved, so each trio sees the same neighbours
        seconds, read, settings = ours(home, sample)
        ours_rates.append(read / seconds)
        seconds, sent = the_2017_way(home, sample)
        old_rates.append(sent / seconds)
        # The JVM tool needs a longer run than ours to leave its warm-up behind.
        tool_rates.append(producer_performance(home, max(10 * read, 100_000), size))
    best = summary(ours_rates)
    return {
        "records": read,
        "mean_flat_record_bytes": size,
        "ours_tweets_per_s": best,
        "the_2017_way_tweets_per_s": summary(old_rates),
        "producer_performance_records_per_s": summary(tool_rates),
        "ratio_vs_2017": best["median"] / summary(old_rates)["median"],
        "ratio_vs_producer_performance": best["median"] / summary(tool_rates)["median"],
        "target_tweets_per_s": TARGET_TWEETS_PER_SECOND,
        "ratio_vs_target": best["median"] / TARGET_TWEETS_PER_SECOND,
        "profile_tweets": sum(1 for _ in read_lines(profile_sample)),
        "profile": profiled(
            lambda: replay([profile_sample], settings=isolated(home), progress=False)
        ),
        "topic_settings": settings.model_dump(mode="json", include={"topic", "dlq_topic"}),
    }
