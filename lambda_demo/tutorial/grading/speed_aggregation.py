"""Exercise 03.1, the speed aggregation: valid tweets to the view per (ingest day, location).

The answer is a function from a DataFrame of valid tweets (the rows `stream.keep_valid`
yields: ``tweet_id``, ``location``, the contract fields the measures read, ``ingest_ts``...)
to a DataFrame with ``ingest_day``, ``location`` and the view's measures. The grader runs it
as the speed layer runs: on a **stream** (the scenario's deliveries written once to a file, read
with ``readStream`` under the speed layer's watermark), processed in one micro-batch in update
mode, in the notebook's Spark session; and it compares the rows the answer emits with a view
computed in pandas. The scenario holds the cases that matter: a tweet delivered twice,
two ingest days for one location, tweets on both sides of midnight, the ``(unknown)``
location and one that only differs from another by case.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from lambda_demo import view
from lambda_demo.contract import ingest_day_of
from lambda_demo.settings import Settings
from lambda_demo.speed.stream import WATERMARK
from lambda_demo.tutorial.grading.base import AnswerFailed, Exercise, Mistake

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

Aggregation = Callable[["DataFrame"], "DataFrame"]

#: (tweet id, ingest time, partition, offset, location, followers, likes, retweets)
DELIVERIES: tuple[tuple[str, str, int, int, str, int, int, int], ...] = (
    ("201", "2026-11-03T09:00:00", 0, 0, "Paris", 100, 3, 1),
    ("202", "2026-11-03T10:00:00", 1, 0, "Paris", 50, 2, 0),
    # A reconnect re-sends tweet 202 four minutes later: it counts once.
    ("202", "2026-11-03T10:04:00", 1, 1, "Paris", 50, 2, 0),
    ("208", "2026-11-03T15:00:00", 0, 1, "paris", 20, 1, 0),  # another key: case is kept
    ("203", "2026-11-03T23:30:00", 2, 0, "Tokyo", 400, 9, 3),
    ("204", "2026-11-04T00:30:00", 2, 1, "Tokyo", 10, 1, 0),  # Tokyo again, the next day
    ("205", "2026-11-04T08:00:00", 0, 2, "(unknown)", 5, 0, 0),
    ("206", "2026-11-04T09:00:00", 1, 2, "(unknown)", 7, 2, 1),
    ("207", "2026-11-04T12:00:00", 0, 3, "São Paulo; 🌎", 900, 40, 7),
    ("207", "2026-11-04T12:03:00", 0, 4, "São Paulo; 🌎", 900, 40, 7),
    ("209", "2026-11-04T23:59:59", 2, 2, "Paris", 30, 0, 2),
)
COLUMNS = ("tweet_id", "ingest_ts", "kafka_partition", "kafka_offset", view.KEY)
DAY_KEY = ("ingest_day", view.KEY)
RUN_TIMEOUT_SECONDS = 120.0
SCHEMA = ", ".join(
    (
        "tweet_id string, ingest_ts timestamp, kafka_partition int, kafka_offset long",
        f"{view.KEY} string",
        *(f"{name} long" for name in ("followers_count", "like_count", "retweet_count")),
    )
)


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _frame() -> pd.DataFrame:
    """The deliveries as pandas, with the measures' fields under their contract names."""
    fields = ("followers_count", "like_count", "retweet_count")
    frame = pd.DataFrame(DELIVERIES, columns=[*COLUMNS, *fields])
    frame["ingest_ts"] = frame["ingest_ts"].map(_ts)
    return frame


def _expected_view() -> pd.DataFrame:
    """First delivery per tweet id, its UTC ingest day, then the view per (day, location)."""
    first = _frame().drop_duplicates("tweet_id")
    days = first["ingest_ts"].map(ingest_day_of)
    parts = [
        view.pandas_aggregate(group).assign(ingest_day=day)
        for day, group in first.groupby(days, sort=True)
    ]
    return pd.concat(parts, ignore_index=True)[["ingest_day", *view.COLUMNS]]


def day_view_difference(expected: pd.DataFrame, got: pd.DataFrame) -> str | None:
    """The first difference between two views per (ingest day, location), in words."""
    wanted = [*DAY_KEY, *view.MEASURE_NAMES]
    missing = [c for c in wanted if c not in got.columns]
    if missing:
        return f"your result has no column {', '.join(missing)} (it has {', '.join(got.columns)})"
    got = got[wanted].copy()
    got["ingest_day"] = pd.to_datetime(got["ingest_day"]).dt.date
    twice = got[got.duplicated(list(DAY_KEY))]
    if not twice.empty:
        day, location = twice.iloc[0][list(DAY_KEY)]
        return (
            f"ingest day {day}, location {location!r} appears in more than one row: group by "
            "day and location"
        )
    merged = expected.merge(
        got, on=list(DAY_KEY), how="outer", suffixes=("_expected", "_got"), indicator="side"
    ).sort_values(list(DAY_KEY))
    for row in merged.itertuples(index=False):
        where = f"ingest day {row.ingest_day}, location {getattr(row, view.KEY)!r}"
        if row.side == "left_only":
            return f"{where} is missing from your result"
        if row.side == "right_only":
            return f"{where} should not be in your result"
        for m in view.MEASURE_NAMES:
            want, have = getattr(row, f"{m}_expected"), getattr(row, f"{m}_got")
            if pd.isna(have) or int(want) != int(have):
                return f"{where}, column {m}: expected {int(want)}, got {have}"
    return None


@dataclass(frozen=True)
class Scenario:
    """The valid tweets as a stream under the speed layer's watermark, and a folder to run in."""

    stream: DataFrame
    folder: Path


@dataclass(frozen=True)
class SparkAggregationExercise(Exercise):
    """A function on a stream of valid tweets, compared with a view computed in pandas."""

    id: str
    task: str
    start: str
    reference: Aggregation
    mistakes: tuple[Mistake, ...] = ()

    def prepare(self, settings: Settings) -> Scenario:
        """The deliveries as one Parquet file, read back as a stream with the watermark."""
        from lambda_demo.clients.spark import get_spark

        spark = get_spark(settings)
        folder = settings.home / "grading" / self.id
        shutil.rmtree(folder, ignore_errors=True)
        rows = [(tweet_id, _ts(ts), *rest) for tweet_id, ts, *rest in DELIVERIES]
        spark.createDataFrame(rows, SCHEMA).coalesce(1).write.parquet(str(folder / "tweets"))
        stream = (
            spark.readStream.schema(SCHEMA)
            .parquet(str(folder / "tweets"))
            .withWatermark("ingest_ts", WATERMARK)
        )
        return Scenario(stream, folder)

    def outcome(self, answer: Aggregation, scenario: Scenario) -> pd.DataFrame:
        """The rows the answer emits in update mode; an error Spark raises becomes feedback."""
        from pyspark.errors import PySparkException

        if not callable(answer):
            raise AnswerFailed(
                f"the answer is a {type(answer).__name__}: give a function that takes the "
                "valid tweets and returns a DataFrame"
            )
        emitted: list[pd.DataFrame] = []
        try:
            query = (
                answer(scenario.stream)
                .writeStream.outputMode("update")
                .foreachBatch(lambda batch, _: emitted.append(batch.toPandas()))
                .option("checkpointLocation", str(scenario.folder / uuid.uuid4().hex))
                .trigger(availableNow=True)
                .start()
            )
            query.awaitTermination(RUN_TIMEOUT_SECONDS)
            error = query.exception()
            query.stop()
        except (PySparkException, AttributeError, TypeError) as exc:
            raise AnswerFailed(f"Spark refused your aggregation: {_first_line(exc)}") from exc
        if error is not None:
            raise AnswerFailed(f"Spark refused your aggregation: {_first_line(error)}")
        return pd.concat(emitted, ignore_index=True) if emitted else pd.DataFrame()

    def expected(self) -> pd.DataFrame:
        return _expected_view()

    def difference(self, expected: pd.DataFrame, got: pd.DataFrame) -> str | None:
        return day_view_difference(expected, got)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _speed_aggregation(tweets: DataFrame) -> DataFrame:
    """The reference: one row per tweet id, then a one-day window on the ingest time."""
    from pyspark.sql import functions as F

    return (
        tweets.dropDuplicatesWithinWatermark(["tweet_id"])
        .groupBy(F.window("ingest_ts", "1 day").alias("day"), "location")
        .agg(
            F.count("*").alias("tweet_count"),
            F.sum("followers_count").alias("followers_sum"),
            F.sum("like_count").alias("likes_sum"),
            F.sum("retweet_count").alias("retweets_sum"),
        )
        .select(
            F.to_date("day.start").alias("ingest_day"),
            "location",
            "tweet_count",
            "followers_sum",
            "likes_sum",
            "retweets_sum",
        )
    )


def _every_delivery(tweets: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    return tweets.groupBy(F.to_date("ingest_ts").alias("ingest_day"), "location").agg(
        F.count("*").alias("tweet_count"),
        F.sum("followers_count").alias("followers_sum"),
        F.sum("like_count").alias("likes_sum"),
        F.sum("retweet_count").alias("retweets_sum"),
    )


def _per_location_only(tweets: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    return (
        tweets.dropDuplicates(["tweet_id"])
        .groupBy("location")
        .agg(
            F.max(F.to_date("ingest_ts")).alias("ingest_day"),
            F.count("*").alias("tweet_count"),
            F.sum("followers_count").alias("followers_sum"),
            F.sum("like_count").alias("likes_sum"),
            F.sum("retweet_count").alias("retweets_sum"),
        )
    )


def _likes_counted(tweets: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    return (
        tweets.dropDuplicates(["tweet_id"])
        .groupBy(F.to_date("ingest_ts").alias("ingest_day"), "location")
        .agg(
            F.count("*").alias("tweet_count"),
            F.sum("followers_count").alias("followers_sum"),
            F.count("like_count").alias("likes_sum"),
            F.count("retweet_count").alias("retweets_sum"),
        )
    )


EXERCISE = SparkAggregationExercise(
    id="03.1",
    task="Write the speed layer's aggregation: from the valid tweets, one row per (ingest "
    "day, location) with the view's four measures, each tweet counted once.",
    start="define a function that takes the valid tweets (a streaming DataFrame with "
    "tweet_id, location, followers_count, like_count, retweet_count and ingest_ts, under a "
    "watermark on ingest_ts) and returns "
    "ingest_day, location, tweet_count, followers_sum, likes_sum and retweets_sum: drop "
    "the duplicate deliveries of a tweet_id, then group by the ingest day and the location. "
    "Then call grade('03.1', your_function).",
    reference=_speed_aggregation,
    mistakes=(
        Mistake(
            answer=_every_delivery,
            hint="every delivery is counted: a tweet re-sent after a reconnect counts twice. "
            "Drop the duplicates of a tweet_id first, with dropDuplicatesWithinWatermark, so "
            "Spark forgets an id once the watermark has passed it.",
        ),
        Mistake(
            answer=_per_location_only,
            hint="grouped by location alone, a location's days are merged into one row. "
            "The speed view is per (ingest day, location): group by the day of ingest_ts "
            "too (a one-day window on a stream, so Spark can forget finished days).",
        ),
        Mistake(
            answer=_likes_counted,
            hint="likes_sum and retweets_sum are sums of like_count and retweet_count, not "
            "counts of rows: use F.sum.",
        ),
    ),
)
