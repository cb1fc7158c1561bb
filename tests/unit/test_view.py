"""The view is defined once; SQL and pandas derive the same measures from it."""

from __future__ import annotations

import pandas as pd

from lambda_demo import view


def test_columns_are_the_key_and_the_four_measures() -> None:
    assert view.COLUMNS == ("location", "tweet_count", "followers_sum", "likes_sum", "retweets_sum")


def test_sql_select_list_casts_every_measure_to_bigint() -> None:
    assert view.sql_select_list() == (
        "CAST(COUNT(*) AS BIGINT) AS tweet_count, "
        "CAST(SUM(followers_count) AS BIGINT) AS followers_sum, "
        "CAST(SUM(like_count) AS BIGINT) AS likes_sum, "
        "CAST(SUM(retweet_count) AS BIGINT) AS retweets_sum"
    )


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
