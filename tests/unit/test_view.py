"""The view is defined once; SQL and pandas derive the same measures from it."""

from __future__ import annotations

import sqlite3

import pandas as pd

from lambda_demo import view

BIG = 2**53 + 1  # beyond float precision: a float anywhere would lose the 1

TWEETS = pd.DataFrame(
    {
        "location": ["a", "a", "b", "c", "c", "c"],
        "followers_count": [BIG, 1, 0, 5, 6, 7],
        "like_count": [1, 2, 3, 0, 0, 9],
        "retweet_count": [0, 0, 7, 1, 1, 1],
    }
)


def _sql(statement: str, rows: pd.DataFrame, table: str) -> pd.DataFrame:
    """Run ``statement`` over ``rows`` (as ``table``) in SQLite, which sums in 64 bits."""
    with sqlite3.connect(":memory:") as db:
        rows.to_sql(table, db, index=False)
        frame = pd.read_sql_query(statement, db)
    db.close()
    return frame


def test_the_sql_select_list_computes_what_pandas_computes() -> None:
    """The batch layer's SQL and check's pandas, both derived from MEASURES, agree."""
    by_sql = _sql(
        f"SELECT {view.KEY}, {view.sql_select_list()} FROM tweets "
        f"GROUP BY {view.KEY} ORDER BY {view.KEY}",
        TWEETS,
        "tweets",
    )
    by_pandas = view.pandas_aggregate(TWEETS)
    assert list(by_sql.columns) == list(view.COLUMNS) == list(by_pandas.columns)
    pd.testing.assert_frame_equal(by_sql, by_pandas, check_dtype=False)
    assert by_sql.set_index(view.KEY).loc["a", "followers_sum"] == BIG + 1


def test_the_sum_of_measures_re_aggregates_partial_views() -> None:
    """Summing per-day (or batch + speed) rows gives the view over all of them."""
    days = [TWEETS.iloc[:3], TWEETS.iloc[3:5], TWEETS.iloc[5:]]
    parts = pd.concat([view.pandas_aggregate(day) for day in days], ignore_index=True)
    whole = _sql(
        f"SELECT {view.KEY}, {view.sql_sum_of_measures()} FROM parts "
        f"GROUP BY {view.KEY} ORDER BY {view.KEY}",
        parts,
        "parts",
    )
    pd.testing.assert_frame_equal(whole, view.pandas_aggregate(TWEETS), check_dtype=False)


def test_pandas_aggregate_sums_per_location_exactly_beyond_2_pow_53() -> None:
    big = 2**53 + 1
    tweets = pd.DataFrame(
        {
            "location": ["a", "a", "b"],
            "followers_count": [big, 1, 0],
            "like_count": [1, 2, 3],
            "retweet_count": [0, 0, 7],
        }
    )
    out = view.pandas_aggregate(tweets).set_index("location")
    assert out.loc["a"].tolist() == [2, big + 1, 3, 0]
    assert out.loc["b"].tolist() == [1, 0, 3, 7]


def test_pandas_aggregate_of_nothing_has_the_view_columns() -> None:
    out = view.pandas_aggregate(pd.DataFrame(columns=["location", "followers_count"]))
    assert tuple(out.columns) == view.COLUMNS and out.empty


def test_pandas_aggregate_per_day_matches_the_sql_per_day() -> None:
    """The speed layer's sums per (ingest day, location) equal SQL's GROUP BY of both."""
    days = TWEETS.assign(ingest_day=["d1", "d2", "d1", "d1", "d2", "d2"])
    by_pandas = view.pandas_aggregate(days, by=("ingest_day", view.KEY))
    by_sql = _sql(
        f"SELECT ingest_day, location, {view.sql_select_list()} FROM tweets "
        "GROUP BY ingest_day, location ORDER BY ingest_day, location",
        days,
        "tweets",
    )
    pd.testing.assert_frame_equal(by_pandas, by_sql, check_dtype=False)
    empty = view.pandas_aggregate(days.iloc[:0], by=("ingest_day", view.KEY))
    assert tuple(empty.columns) == ("ingest_day", *view.COLUMNS) and empty.empty
