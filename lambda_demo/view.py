"""The view's definition, written once: its key, its measures, and the field each one reads.

The batch layer (SQL), the speed layer and ``check`` (both pandas) all derive their
aggregation from ``MEASURES``, so they can never disagree about what "the view" means.
Per location key:

* ``tweet_count``   - number of distinct tweets (a tweet delivered twice counts once)
* ``followers_sum`` - sum of the author's followers over those tweets (reach)
* ``likes_sum``     - sum of like counts
* ``retweets_sum``  - sum of retweet counts

Every other list that names these measures or the fields they read is derived from
``MEASURES`` too: the warehouse's tables (``raw_tweets`` gets one column per field read,
``batch_view`` and ``speed_view`` one per measure, and ``ensure_schema`` adds the columns an
existing warehouse lacks), the loader's columns, the speed layer's schema and ``check``'s
columns. So adding a measure is one line below, plus, if no measure read its field before,
that field on the contract's `lambda_demo.contract.FlatTweet`. A speed layer already
deployed needs a new checkpoint (delete the old one): its rows lack the new measure for the
tweets it already counted, so it refuses to go on (``speed.sink.MeasureAddedLater``), and the
new deployment, which counts every tweet in Kafka again, replaces its rows once caught up.

All measures are 64-bit integers: each field a measure reads is a count the contract bounds
(`lambda_demo.contract.MAX_COUNT`), so no sum overflows in any layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

KEY = "location"


@dataclass(frozen=True)
class Measure:
    """One column of the view: a count of tweets, or the sum of one contract field."""

    name: str
    reads: str | None = None
    """The `FlatTweet` field summed, a count; None counts the tweets."""

    def sql(self) -> str:
        expr = "COUNT(*)" if self.reads is None else f"SUM({self.reads})"
        return f"CAST({expr} AS BIGINT) AS {self.name}"


MEASURES: tuple[Measure, ...] = (
    Measure("tweet_count"),
    Measure("followers_sum", reads="followers_count"),
    Measure("likes_sum", reads="like_count"),
    Measure("retweets_sum", reads="retweet_count"),
)


def __getattr__(name: str) -> tuple[str, ...]:
    """``MEASURE_NAMES``, ``COLUMNS`` and ``FIELDS_READ``, derived from ``MEASURES`` when read.

    * ``MEASURE_NAMES`` - the measures' names, in order
    * ``COLUMNS``       - the view's columns: ``KEY``, then the measures
    * ``FIELDS_READ``   - the contract fields the measures read, each once, in order

    Derived at each access rather than stored, so that they cannot disagree with
    ``MEASURES``, not even after a notebook or a test changed ``MEASURES`` at run time.
    """
    if name == "MEASURE_NAMES":
        return tuple(m.name for m in MEASURES)
    if name == "COLUMNS":
        return _columns()
    if name == "FIELDS_READ":
        return tuple(dict.fromkeys(m.reads for m in MEASURES if m.reads is not None))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _columns() -> tuple[str, ...]:
    return (KEY, *(m.name for m in MEASURES))


def sql_select_list() -> str:
    """``CAST(COUNT(*) AS BIGINT) AS tweet_count, ...`` for a GROUP BY location query."""
    return ", ".join(m.sql() for m in MEASURES)


def sql_sum_of_measures() -> str:
    """Re-aggregate already aggregated rows (speed days, or batch + speed) per location."""
    return ", ".join(f"CAST(SUM({m.name}) AS BIGINT) AS {m.name}" for m in MEASURES)


def pandas_aggregate(tweets: pd.DataFrame, by: tuple[str, ...] = (KEY,)) -> pd.DataFrame:
    """The view computed by pandas from flat tweets (one row per distinct tweet), per ``by``.

    ``by`` is the location key, or (``ingest_day``, location key) for the speed layer's rows.
    """
    import pandas as pd

    if tweets.empty:
        keys = {c: pd.Series(dtype="object") for c in by}
        return pd.DataFrame(keys | {m.name: pd.Series(dtype="int64") for m in MEASURES})
    grouped = tweets.groupby(list(by), sort=True)
    out = pd.DataFrame(
        {m.name: grouped.size() if m.reads is None else grouped[m.reads].sum() for m in MEASURES}
    )
    return out.astype("int64").reset_index()
