"""Benchmark 3 and 4: the speed layer's throughput and freshness; serving-layer latency."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from psycopg2.extensions import cursor

from benchmarks.common import isolated, percentile, summary, timed
from lambda_demo import view
from lambda_demo.clients import kafka_io, warehouse
from lambda_demo.clients.spark import get_spark
from lambda_demo.contract import FlatTweet, parse_api_tweet
from lambda_demo.ingestion.clock import wait_until
from lambda_demo.ingestion.handler import TweetHandler
from lambda_demo.ingestion.replay import read_lines
from lambda_demo.serving import reads
from lambda_demo.settings import Settings
from lambda_demo.speed.run import await_first_batch, start_queries, stop_queries

if TYPE_CHECKING:
    from pyspark.sql.streaming import StreamingQuery

TARGET_TWEETS_PER_SECOND = 20_000
FRESHNESS_TARGET_P95_SECONDS = 1.5
FRESHNESS_TRIGGER_SECONDS = 0.5
"""The freshness benchmark's trigger (the shortest the tests use; the default is 2 s)."""
WARM_UP_TWEETS = 500
WARM_UP_SECONDS = 10.0
"""How long tweets stream at the benchmark's rate, untimed, before each measured window.

A speed layer serves warm: its JVM has compiled the micro-batch's code paths long ago. Fresh,
its micro-batches shrink over the first ten or so (from about 1.1 s to 0.7 s here), so a
window that started cold would time the JIT compiler rather than the speed layer.
"""
FRESHNESS_SAMPLE_TWEETS = 50_000
"""Enough distinct tweets for two warm-ups and two windows at 500 tweets/s for 30 s."""
SERVING_TARGET_P99_MS = 20.0
ROUND_TRIP = "SELECT 1"  # the baseline row of the serving table, not a serving query


def worst_serving_p99(busy: dict) -> float:
    """The slowest serving query's p99 (ms); the ``SELECT 1`` floor is not a serving query."""
    return max(v["p99_ms"] for name, v in busy.items() if name != ROUND_TRIP)


def throughput(home: Path, topic: str, *, repeats: int) -> dict:
    """``start_queries(once=True)`` over the topic vs Spark's plain batch read of it."""
    spark = get_spark(Settings(home=home))  # started once, outside the timings
    ours, plain = [], []
    for _ in range(repeats):
        settings = isolated(home, topic=topic, dlq_topic=f"{topic}.dlq")
        reader = (
            spark.read.format("kafka")
            .option("kafka.bootstrap.servers", kafka_io.bootstrap(settings))
            .option("subscribe", topic)
            .option("startingOffsets", "earliest")
        )
        seconds, records = timed(lambda r=reader: r.load().count())
        plain.append(records / seconds)

        def once(s: Settings = settings) -> None:
            for query in start_queries(s, once=True):
                query.awaitTermination()

        ours.append(records / timed(once)[0])
    best = summary(ours)
    return {
        "records": records,
        "speed_once_tweets_per_s": best,
        "spark_batch_read_records_per_s": summary(plain),
        "ratio_vs_spark_read": best["median"] / summary(plain)["median"],
        "target_tweets_per_s": TARGET_TWEETS_PER_SECOND,
        "ratio_vs_target": best["median"] / TARGET_TWEETS_PER_SECOND,
    }


def unique_tweets(sample: Path) -> list[FlatTweet]:
    seen: dict[str, FlatTweet] = {}
    for raw in read_lines(sample):
        parsed = parse_api_tweet(raw)
        if isinstance(parsed, FlatTweet):
            seen.setdefault(parsed.tweet_id, parsed)
    return list(seen.values())


def _speed_total(cur: cursor) -> int:
    cur.execute("SELECT COALESCE(SUM(tweet_count), 0) FROM speed_view")
    return int(cur.fetchone()[0])


def serving_latencies(settings: Settings, place: str, stop: threading.Event) -> dict:
    """Call every serving query in turn until ``stop``; latencies in ms per query kind."""
    calls = {
        f"top20_by_{m}": (lambda m=m: reads.top(20, by=m, settings=settings))
        for m in view.MEASURE_NAMES
    }
    calls["location"] = lambda: reads.location(place, settings=settings)
    # The floor: one round trip on the same reused connection, through the same frame code.
    calls[ROUND_TRIP] = lambda: warehouse.fetch_frame("SELECT 1 AS one", settings=settings)
    found: dict[str, list[float]] = {name: [] for name in calls}
    while not stop.is_set():
        for name, call in calls.items():
            found[name].append(timed(call)[0] * 1000)
    return found


def _latency_table(found: dict[str, list[float]]) -> dict:
    return {
        name: {"n": len(v), "p50_ms": percentile(v, 50), "p99_ms": percentile(v, 99)}
        for name, v in found.items()
    }


def freshness_and_serving(
    home: Path,
    sample: Path,
    *,
    schema: str,
    rate: int,
    seconds: float,
    trigger_seconds: float = FRESHNESS_TRIGGER_SECONDS,
) -> dict:
    """Produce ``rate`` tweets/s while the speed layer and the serving queries run.

    Freshness of a record = first moment the speed view's total includes it minus the
    moment it was handed to the producer. ``schema`` already holds a 1M-tweet batch view,
    so the serving queries merge a real batch part with the live speed part.

    Two windows, half the tweets each: the speed layer alone at ``trigger_seconds``, then at
    the default trigger with the serving queries running back to back beside it (one core's
    worth of PostgreSQL work on a 2-core machine): the serving latencies are for the speed
    layer as users run it.
    The clock starts after a warm-up: `WARM_UP_TWEETS` tweets produced and seen in the view,
    then `WARM_UP_SECONDS` of tweets at ``rate``, untimed, before each window. The first
    micro-batches that hold data also start Spark's Python workers and compile the query's
    code, which a running speed layer did long ago; how long that takes is reported apart,
    as ``first_visible_s``.
    """
    settings = isolated(home, warehouse_schema=schema, trigger_seconds=trigger_seconds)
    tweets = unique_tweets(sample)
    place = tweets[0].location
    queries = start_queries(settings)
    await_first_batch(queries)
    producer = kafka_io.producer(settings)
    handler = TweetHandler.for_settings(producer, settings)
    warm_up, tweets = tweets[:WARM_UP_TWEETS], tweets[WARM_UP_TWEETS:]
    first_visible = _warm_up(settings, handler, warm_up)
    streamed = int(rate * WARM_UP_SECONDS)
    half = len(tweets) // 2
    _window(settings, queries[0], handler, tweets[:streamed], rate, WARM_UP_SECONDS)
    alone = _window(settings, queries[0], handler, tweets[streamed:half], rate, seconds)
    stop_queries(queries, settings)
    # The serving queries' targets are for the speed layer as users run it: the default trigger.
    default_trigger = Settings.model_fields["trigger_seconds"].default
    queries = start_queries(settings, trigger_seconds=default_trigger)
    await_first_batch(queries)
    rest = tweets[half:]
    _warm_up(settings, handler, rest[:WARM_UP_TWEETS])
    rest = rest[WARM_UP_TWEETS:]
    _window(settings, queries[0], handler, rest[:streamed], rate, WARM_UP_SECONDS)
    latencies: dict[str, list[float]] = {}
    loaded = _window(
        settings,
        queries[0],
        handler,
        rest[streamed:],
        rate,
        seconds,
        load=lambda stop: latencies.update(serving_latencies(settings, place, stop)),
    )
    loaded["trigger_seconds"] = default_trigger
    stop_queries(queries, settings)
    producer.close()
    idle_stop = threading.Event()
    threading.Timer(5.0, idle_stop.set).start()
    idle = serving_latencies(settings, place, idle_stop)
    busy = _latency_table(latencies)
    p95 = alone["freshness_p95_s"]
    return {
        "rate_asked": rate,
        "trigger_seconds": settings.trigger_seconds,
        "first_visible_s": first_visible,
        "warm_up_tweets": WARM_UP_TWEETS,
        "warm_up_seconds": WARM_UP_SECONDS,
        **alone,
        "under_serving_load": loaded,
        "freshness_target_p95_s": FRESHNESS_TARGET_P95_SECONDS,
        "freshness_target_met": p95 <= FRESHNESS_TARGET_P95_SECONDS,
        "serving_under_load": busy,
        "serving_idle": _latency_table(idle),
        "serving_target_p99_ms": SERVING_TARGET_P99_MS,
        "serving_target_met": worst_serving_p99(busy) < SERVING_TARGET_P99_MS,
    }


def _window(
    settings: Settings,
    view_query: StreamingQuery,
    handler: TweetHandler,
    tweets: list[FlatTweet],
    rate: int,
    seconds: float,
    *,
    load: Callable[[threading.Event], None] | None = None,
) -> dict:
    """Produce ``tweets`` at ``rate`` per second for at most ``seconds``; how fresh the view was.

    ``load`` runs in a thread of its own meanwhile (the serving queries), until told to stop.
    """
    # The poller's own connection: the serving queries keep theirs to themselves.
    poller = warehouse.connect(settings, autocommit=True)
    cur = poller.cursor()
    base = _speed_total(cur)
    first_batch = view_query.lastProgress["batchId"] if view_query.lastProgress else -1
    sent: list[tuple[float, int]] = []  # (time handed to the producer, cumulative count)
    seen: list[tuple[float, int]] = []  # (time polled, speed-view total)
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            seen.append((time.time(), _speed_total(cur) - base))
            time.sleep(0.05)

    threads = [threading.Thread(target=poll)]
    if load is not None:
        threads.append(threading.Thread(target=load, args=(stop,)))
    for thread in threads:
        thread.start()
    tick, count, started = 0.1, 0, time.time()
    while time.time() - started < seconds and count < len(tweets):
        now = time.time()
        for tweet in tweets[count : count + int(rate * tick)]:
            handler.handle(b"", ingest_ms=int(now * 1000), routed=routed(tweet, handler))
        count = min(len(tweets), count + int(rate * tick))
        sent.append((now, count))
        handler.flush()
        time.sleep(max(0.0, now + tick - time.time()))
    produced_for = time.time() - started
    deadline = time.time() + 60
    while (not seen or seen[-1][1] < count) and time.time() < deadline:
        time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join()
    poller.close()
    lags = []
    for when, total in sent:
        visible = next((t for t, n in seen if n >= total), None)
        if visible is not None:
            lags.append(visible - when)
    cycles = [
        report["durationMs"]["triggerExecution"]
        for report in map(json.loads, (p.json for p in view_query.recentProgress))
        if report["batchId"] > first_batch and report["numInputRows"]
    ]
    return {
        "rate_achieved": count / produced_for,
        "produced": count,
        "visible": seen[-1][1] if seen else 0,
        "micro_batch_ms": summary(cycles) if cycles else None,
        "freshness_p50_s": percentile(lags, 50) if lags else float("nan"),
        "freshness_p95_s": percentile(lags, 95) if lags else float("nan"),
    }


def _warm_up(settings: Settings, handler: TweetHandler, tweets: list[FlatTweet]) -> float:
    """Produce ``tweets`` at once and wait until the view counts them; seconds that took."""
    with contextlib.closing(warehouse.connect(settings, autocommit=True)) as conn:
        cur = conn.cursor()
        base = _speed_total(cur)
        started = time.time()
        for tweet in tweets:
            handler.handle(b"", ingest_ms=int(started * 1000), routed=routed(tweet, handler))
        handler.flush()
        wait_until(
            lambda: _speed_total(cur) - base >= len(tweets),
            120,
            "the warm-up tweets in speed_view",
            interval_seconds=0.05,
        )
    return time.time() - started


def routed(tweet: FlatTweet, handler: TweetHandler) -> tuple:
    """What ``TweetHandler.route`` returns for an already parsed tweet (no re-parsing)."""
    from lambda_demo.ingestion.handler import partition_for

    key = tweet.tweet_id.encode()
    return handler.topic, partition_for(key, handler.partitions), key, tweet
