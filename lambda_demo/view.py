"""The view's definition, written once: its key, its measures, and how each is computed.

The batch layer (SQL), the speed layer (Spark) and ``check`` (pandas) all derive their
aggregation from ``MEASURES``, so the three can never disagree about what "the view" means.
Per location key:

* ``tweet_count``   - number of distinct tweets (a tweet delivered twice counts once)
* ``followers_sum`` - sum of the author's followers over those tweets (reach)
* ``likes_sum``     - sum of like counts
* ``retweets_sum``  - sum of retweet counts

All measures are 64-bit integers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import Column

KEY = "location"


@dataclass(frozen=True)
class Measure:
    """One column of the view: a count of tweets, or the sum of a flat-record field."""

    name: str
    field: str | None  # None means "count the tweets"

    def sql(self) -> str:
        expr = "COUNT(*)" if self.field is None else f"SUM({self.field})"
        return f"CAST({expr} AS BIGINT) AS {self.name}"

    def spark(self) -> Column:
        from pyspark.sql import functions as F

        expr = F.count(F.lit(1)) if self.field is None else F.sum(self.field)
        return expr.cast("long").alias(self.name)


MEASURES: tuple[Measure, ...] = (
    Measure("tweet_count", None),
    Measure("followers_sum", "followers_count"),
    Measure("likes_sum", "like_count"),
    Measure("retweets_sum", "retweet_count"),
)
MEASURE_NAMES: tuple[str, ...] = tuple(m.name for m in MEASURES)
COLUMNS: tuple[str, ...] = (KEY, *MEASURE_NAMES)


def sql_select_list() -> str:
    """``CAST(COUNT(*) AS BIGINT) AS tweet_count, ...`` for a GROUP BY location query."""
    return ", ".join(m.sql() for m in MEASURES)


def sql_sum_of_measures() -> str:
    """Re-aggregate already aggregated rows (speed days, or batch + speed) per location."""
    return ", ".join(f"CAST(SUM({m.name}) AS BIGINT) AS {m.name}" for m in MEASURES)


def spark_aggregates() -> list[Column]:
    return [m.spark() for m in MEASURES]


def pandas_aggregate(tweets: pd.DataFrame) -> pd.DataFrame:
    """The view computed by pandas from flat tweets (one row per distinct tweet)."""
    import pandas as pd

    if tweets.empty:
        return pd.DataFrame(
            {c: pd.Series(dtype="object" if c == KEY else "int64") for c in COLUMNS}
        )
    grouped = tweets.groupby(KEY, sort=True)
    out = pd.DataFrame(
        {m.name: grouped.size() if m.field is None else grouped[m.field].sum() for m in MEASURES}
    )
    return out.astype("int64").reset_index()
