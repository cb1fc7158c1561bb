"""Exercise 06.1, a non-additive measure done right: followers per tweet and distinct authors
per location, over the batch part and the speed part.

Neither merges by adding the parts' answers. An average merges from what *is* additive, the
sum and the count, divided at the end; a distinct count merges from the sets, never from the
parts' counts. The scenario's tweets are chosen so each shortcut gives another number: an
author who tweeted on both sides of the cutoff, parts with different numbers of tweets, and
averages that are not whole numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pandas as pd
import psycopg2
from psycopg2 import sql as psql
from psycopg2.extras import execute_values

from lambda_demo import view
from lambda_demo.contract import served_by_batch
from lambda_demo.tutorial.grading.base import Mistake
from lambda_demo.tutorial.grading.dedup_then_cut import CUTOFF
from lambda_demo.tutorial.grading.frames import frame_difference
from lambda_demo.tutorial.grading.sql import SqlExercise

COLUMNS = ("followers_per_tweet", "authors")
"""The result's columns after ``location``."""

#: One row per distinct tweet: (ingest day, location, author id, followers at capture time)
TWEETS: tuple[tuple[str, str, str, int], ...] = (
    # Ana tweets on both sides of D; the parts hold 3 and 1 tweets.
    ("2026-11-01", "Paris", "ana", 100),
    ("2026-11-01", "Paris", "ben", 300),
    ("2026-11-02", "Paris", "ana", 110),
    ("2026-11-03", "Paris", "ana", 120),
    # Two speed days, so the speed part has two rows for one location.
    ("2026-11-02", "Tokyo", "kenji", 1000),
    ("2026-11-03", "Tokyo", "yui", 10),
    ("2026-11-04", "Tokyo", "yui", 10),
    ("2026-11-04", "Tokyo", "aiko", 41),
    # One side only.
    ("2026-11-01", "Lagos", "tunde", 50),
    ("2026-11-02", "Lagos", "tunde", 51),
    ("2026-11-04", "São Paulo; 🌎", "bia", 7),
)
RUN_ID = "r1"
DEPLOYMENT = "live"


def _tweets() -> pd.DataFrame:
    frame = pd.DataFrame(TWEETS, columns=["ingest_day", view.KEY, "author_id", "followers"])
    frame["ingest_day"] = frame["ingest_day"].map(date.fromisoformat)
    frame["batch"] = [served_by_batch(day, CUTOFF) for day in frame["ingest_day"]]
    return frame


def _measures(groups: pd.core.groupby.DataFrameGroupBy) -> pd.DataFrame:
    """tweet_count and followers_sum per group; the view's other measures are 0 here."""
    out = pd.DataFrame({"tweet_count": groups.size(), "followers_sum": groups["followers"].sum()})
    for name in view.MEASURE_NAMES:
        if name not in out:
            out[name] = 0
    return out[list(view.MEASURE_NAMES)].astype("int64").reset_index()


def _load(cur: psycopg2.extensions.cursor) -> None:
    """The two layers' tables as the pipeline would have written them, plus the author sets."""
    tweets = _tweets()
    before, after = tweets[tweets["batch"]], tweets[~tweets["batch"]]
    measures = psql.SQL(", ").join(psql.Identifier(m) for m in view.MEASURE_NAMES)
    batch = _measures(before.groupby(view.KEY))
    execute_values(
        cur,
        psql.SQL("INSERT INTO batch_view (run_id, location, {}) VALUES %s").format(measures),
        [(RUN_ID, *row) for row in batch.itertuples(index=False)],
    )
    cur.execute("INSERT INTO batch_meta (run_id, cutoff_day) VALUES (%s, %s)", (RUN_ID, CUTOFF))
    cur.execute(
        "INSERT INTO speed_deployments (deployment, checkpoint, serving) VALUES (%s, %s, TRUE)",
        (DEPLOYMENT, f"checkpoints/{DEPLOYMENT}"),
    )
    speed = _measures(after.groupby(["ingest_day", view.KEY]))
    execute_values(
        cur,
        psql.SQL("INSERT INTO speed_view (deployment, ingest_day, location, {}) VALUES %s").format(
            measures
        ),
        [(DEPLOYMENT, *row) for row in speed.itertuples(index=False)],
    )
    cur.execute("CREATE TABLE batch_authors (location TEXT NOT NULL, author_id TEXT NOT NULL)")
    cur.execute(
        "CREATE TABLE speed_authors "
        "(ingest_day DATE NOT NULL, location TEXT NOT NULL, author_id TEXT NOT NULL)"
    )
    execute_values(
        cur,
        "INSERT INTO batch_authors (location, author_id) VALUES %s",
        sorted(set(zip(before[view.KEY], before["author_id"], strict=True))),
    )
    execute_values(
        cur,
        "INSERT INTO speed_authors (ingest_day, location, author_id) VALUES %s",
        sorted(set(zip(after["ingest_day"], after[view.KEY], after["author_id"], strict=True))),
    )


def _expected() -> pd.DataFrame:
    """From the tweets themselves, ignoring the layers: the mean and the distinct count."""
    grouped = _tweets().groupby(view.KEY, sort=True)
    return pd.DataFrame(
        {
            "followers_per_tweet": grouped["followers"].mean(),
            "authors": grouped["author_id"].nunique(),
        }
    ).reset_index()


_AVERAGE = "CAST(SUM(followers_sum) AS NUMERIC) / SUM(tweet_count)"
_AUTHORS = """SELECT location, COUNT(*) AS authors FROM (
        SELECT location, author_id FROM batch_authors
        UNION
        SELECT location, author_id FROM speed_authors
    ) AS author_sets GROUP BY location"""

_TEMPLATE = """
WITH parts AS (
    SELECT location, tweet_count, followers_sum FROM batch_serving
    UNION ALL
    SELECT location, tweet_count, followers_sum FROM speed_serving
),
averages AS (
    SELECT location, {average} AS followers_per_tweet FROM parts GROUP BY location
),
authors AS (
    {authors}
)
SELECT location, followers_per_tweet, authors
FROM averages JOIN authors USING (location)
"""

_REFERENCE = _TEMPLATE.format(average=_AVERAGE, authors=_AUTHORS)

_MISTAKES = (
    Mistake(
        answer=_TEMPLATE.format(
            average="AVG(CAST(followers_sum AS NUMERIC) / tweet_count)", authors=_AUTHORS
        ),
        hint="an average of the parts' averages weighs each row of a part the same, however "
        "many tweets it stands for: Paris has 3 tweets before D averaging 170 and 1 after "
        "averaging 120, which is 157.5 followers per tweet, not 145. Sum followers_sum, sum "
        "tweet_count, and divide once, at the end.",
    ),
    Mistake(
        answer=_TEMPLATE.format(
            average=_AVERAGE,
            authors="""SELECT location, SUM(n) AS authors FROM (
        SELECT location, COUNT(DISTINCT author_id) AS n FROM batch_authors GROUP BY location
        UNION ALL
        SELECT location, COUNT(DISTINCT author_id) FROM speed_authors GROUP BY location
    ) AS counts GROUP BY location""",
        ),
        hint="distinct counts do not add up: Ana tweeted in Paris before and after D, so she "
        "is in both parts' counts. Merge the author *sets* (UNION removes the duplicates), "
        "then count.",
    ),
    Mistake(
        answer=_TEMPLATE.format(
            average=_AVERAGE,
            authors="""SELECT location, MAX(n) AS authors FROM (
        SELECT location, COUNT(DISTINCT author_id) AS n FROM batch_authors GROUP BY location
        UNION ALL
        SELECT location, COUNT(DISTINCT author_id) FROM speed_authors GROUP BY location
    ) AS counts GROUP BY location""",
        ),
        hint="the larger part's count misses the authors found only in the other part: "
        "Kenji tweeted in Tokyo before D, Yui and Aiko after it, which is 3 authors, not 2. "
        "Merge the author sets (UNION), then count.",
    ),
)


@dataclass(frozen=True)
class NonAdditiveExercise(SqlExercise):
    """A SqlExercise whose columns are an average and a distinct count."""

    def difference(self, expected: pd.DataFrame, got: pd.DataFrame) -> str | None:
        return frame_difference(expected, got, COLUMNS)


EXERCISE = NonAdditiveExercise(
    id="06.1",
    task="Per location, over the batch part and the speed part: the followers per tweet "
    "and the number of distinct authors.",
    start="assign a SQL string to a variable: SELECT location, followers_per_tweet and "
    "authors, from batch_serving and speed_serving (tweet_count, followers_sum per "
    "location; the speed part per day too) and from the author sets batch_authors and "
    "speed_authors (location, author_id). Then grade('06.1', your_sql).",
    reference=_REFERENCE,
    params={},
    load=_load,
    expected_view=_expected,
    mistakes=_MISTAKES,
)
