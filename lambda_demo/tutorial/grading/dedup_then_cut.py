"""Exercise 02.1, deduplicate first, then cut: the speed layer's days from ``raw_tweets``.

The scenario holds the cases that tell the right order from the usual wrong ones: a tweet
delivered at 23:58 the day before the cutoff and again at 00:03 on it, a redelivery on the
cutoff day, and deliveries tied on the ingest time (then on the partition).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd
import psycopg2
from psycopg2 import sql as psql
from psycopg2.extras import execute_values

from lambda_demo import view
from lambda_demo.batch.recompute import RAW_DELIVERY
from lambda_demo.clients import warehouse
from lambda_demo.contract import ingest_day_of, served_by_batch, sql_speed_days
from lambda_demo.tutorial.grading.base import Mistake
from lambda_demo.tutorial.grading.sql import SqlExercise


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


CUTOFF = date(2026, 11, 3)

#: (tweet id, ingest time, partition, offset, location, followers, likes, retweets)
DELIVERIES: tuple[tuple[str, str, int, int, str, int, int, int], ...] = (
    # First delivered at 23:58 the day before D, again at 00:03 on D: the batch view's tweet,
    # not the speed layer's, although one of its deliveries is on D.
    ("102", "2026-11-02T23:58:00", 0, 1, "Paris", 200, 5, 2),
    ("102", "2026-11-03T00:03:00", 2, 0, "Paris", 201, 6, 2),
    # Delivered on D only.
    ("103", "2026-11-03T00:01:00", 1, 7, "Paris", 50, 0, 0),
    # Delivered twice on D: counts once, with its first delivery's figures.
    ("108", "2026-11-03T06:00:00", 0, 12, "Tokyo", 400, 9, 3),
    ("108", "2026-11-03T09:00:00", 1, 15, "Tokyo", 410, 12, 5),
    # Two deliveries at the same instant: the lower partition is the first...
    ("109", "2026-11-04T08:00:00", 1, 3, "Berlin", 75, 2, 1),
    ("109", "2026-11-04T08:00:00", 0, 9, "Berlin", 70, 2, 1),
    # ...and in the same partition, the lower offset.
    ("110", "2026-11-04T09:30:00", 2, 6, "(unknown)", 8, 1, 0),
    ("110", "2026-11-04T09:30:00", 2, 4, "(unknown)", 5, 0, 0),
    # Plain tweets before and after D, one with a location only a careful query keeps intact.
    ("101", "2026-11-01T10:00:00", 0, 0, "London", 10, 1, 0),
    ("106", "2026-11-03T15:00:00", 1, 8, "São Paulo; 🌎", 900, 40, 7),
    ("107", "2026-11-04T16:45:00", 2, 2, "London", 30, 4, 0),
)


def _load_deliveries(cur: psycopg2.extensions.cursor) -> None:
    columns = warehouse.raw_tweets_columns()
    rows = []
    for tweet_id, ts, partition, offset, location, followers, likes, retweets in DELIVERIES:
        values = {
            "tweet_id": tweet_id,
            "ingest_ts": _ts(ts),
            "ingest_day": ingest_day_of(_ts(ts)),
            "kafka_partition": partition,
            "kafka_offset": offset,
            "created_at": ts,
            "author_id": "1",
            view.KEY: location,
            "followers_count": followers,
            "like_count": likes,
            "retweet_count": retweets,
            "lang": "en",
            "object_key": "graded-scenario",
        }
        rows.append(tuple(values.get(name, 0) for name in columns))
    names = psql.SQL(", ").join(psql.Identifier(name) for name in columns)
    execute_values(cur, psql.SQL("INSERT INTO raw_tweets ({}) VALUES %s").format(names), rows)


def _speed_days_expected() -> pd.DataFrame:
    """First delivery per tweet over *all* deliveries, then the days from D on."""
    deliveries = pd.DataFrame(
        DELIVERIES,
        columns=[
            "tweet_id",
            "ingest_ts",
            "kafka_partition",
            "kafka_offset",
            view.KEY,
            "followers_count",
            "like_count",
            "retweet_count",
        ],
    )
    deliveries["ingest_ts"] = deliveries["ingest_ts"].map(_ts)
    first = deliveries.sort_values(RAW_DELIVERY.first_delivery_order()).drop_duplicates("tweet_id")
    served_by_speed = [not served_by_batch(ingest_day_of(ts), CUTOFF) for ts in first["ingest_ts"]]
    return view.pandas_aggregate(first[served_by_speed])


_MEASURES_SQL = view.sql_select_list()
_ORDER = RAW_DELIVERY.sql_order_by()
_SPEED_DAYS = sql_speed_days("ingest_day", "%(cutoff)s")

_DEDUP_THEN_CUT = f"""
SELECT location, {_MEASURES_SQL}
FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY tweet_id ORDER BY {_ORDER}) AS delivery
    FROM raw_tweets
) AS deliveries
WHERE delivery = 1 AND ingest_day >= %(cutoff)s
GROUP BY location
"""

_DEDUP_MISTAKES = (
    Mistake(
        answer=f"""
SELECT location, {_MEASURES_SQL}
FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY tweet_id ORDER BY {_ORDER}) AS delivery
    FROM raw_tweets WHERE {_SPEED_DAYS}
) AS deliveries
WHERE delivery = 1
GROUP BY location
""",
        hint="your query cuts at the cutoff *before* deduplicating. A tweet first delivered "
        "at 23:58 the day before D and again at 00:03 on D is the batch view's: cut first, and "
        "its first delivery is out of sight, so its second one counts here as well. "
        "Deduplicate over all deliveries, then keep the days from the cutoff on.",
    ),
    Mistake(
        answer=f"SELECT location, {_MEASURES_SQL} FROM raw_tweets "
        "WHERE ingest_day >= %(cutoff)s GROUP BY location",
        hint="every delivery is counted: a tweet delivered twice counts twice. Keep one "
        "delivery per tweet_id (ROW_NUMBER() OVER (PARTITION BY tweet_id ...) = 1).",
    ),
    Mistake(
        answer=_DEDUP_THEN_CUT.replace(_ORDER, "ingest_ts DESC, kafka_partition, kafka_offset"),
        hint="one delivery per tweet, but the *last* one: the first delivery wins (smallest "
        "ingest time, then partition, then offset), and its figures and its day count.",
    ),
    Mistake(
        answer=_DEDUP_THEN_CUT.replace(_ORDER, "ingest_ts"),
        hint="deliveries at the same instant are ordered by nothing, so which one wins is "
        "up to the database. Break the tie: ORDER BY ingest_ts, kafka_partition, kafka_offset.",
    ),
    Mistake(
        answer=_DEDUP_THEN_CUT.replace("ingest_day >= %(cutoff)s", "ingest_day > %(cutoff)s"),
        hint="the cutoff day D itself is the speed layer's: keep ingest_day >= D.",
    ),
)


EXERCISE = SqlExercise(
    id="02.1",
    task="From raw_tweets, the view for the days from the cutoff on (the speed "
    "layer's days): deduplicate first, then cut.",
    start="assign a SQL string to a variable: SELECT location and the view's four "
    "measures FROM raw_tweets, for tweets whose first delivery (smallest ingest_ts, "
    "then kafka_partition, then kafka_offset) is on an ingest day from %(cutoff)s on, "
    "each counted once with that delivery's figures. Then grade('02.1', your_sql).",
    reference=_DEDUP_THEN_CUT,
    params={"cutoff": CUTOFF},
    load=_load_deliveries,
    expected_view=_speed_days_expected,
    mistakes=_DEDUP_MISTAKES,
)
