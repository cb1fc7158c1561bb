"""The serving layer: one query sees all history (batch) plus the last seconds (speed).

``serving_view`` is a SQL view (see ``lambda_demo.clients.warehouse``) over ``batch_view`` and the
serving speed deployment's rows of ``speed_view``, with the cutoff read from ``batch_meta``,
the batch run's own metadata. Why a
view rather than a table swapped in by each batch run (as the 2017 design did)?

* One statement reads batch view, cutoff and speed rows in **one snapshot**: a batch run
  commits its new rows and its new cutoff together, so a reader sees either the old pair or
  the new pair, never a mix - no double counting at the boundary, no missing day.
* There is never a moment without an answer: nothing is dropped or renamed.
* The speed part is always live: no copy goes stale between refreshes.

The price is that every query aggregates the speed rows again; they are few (today's
locations), so queries stay in milliseconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from psycopg2 import sql

from lambda_demo import view
from lambda_demo.clients import warehouse
from lambda_demo.errors import LambdaDemoError
from lambda_demo.settings import Settings

if TYPE_CHECKING:
    import pandas as pd


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Measures as exact ``int64``; an error that says what to do where one is NULL.

    A measure is NULL at a location when it was added to the view after every row there was
    computed (see ``warehouse.ensure_schema``). There is no right number to return, and
    pandas would have turned the whole column into inexact floats.
    """
    for name in view.MEASURE_NAMES:
        if name not in frame or frame[name].dtype == "int64":
            continue  # pandas read it as exact integers: no NULL there, nothing to convert
        if frame[name].isna().any():
            raise LambdaDemoError(
                f"The measure {name} is not computed yet for every location: it was added "
                "after the current batch view or speed deployment was computed. Run "
                "`lambda-demo batch`, and restart the speed layer on a new checkpoint."
            )
        frame[name] = frame[name].astype("int64")
    return frame


def serving_view_sql() -> sql.Composed:
    """Every location's row of ``serving_view``, by location."""
    columns = sql.SQL(", ").join(map(sql.Identifier, view.COLUMNS))
    return sql.SQL("SELECT {} FROM serving_view ORDER BY location").format(columns)


def top_sql(by: str) -> sql.Composed:
    """The rows with the largest ``by`` (a measure's name); parameter: how many."""
    columns = sql.SQL(", ").join(map(sql.Identifier, view.COLUMNS))
    return sql.SQL("SELECT {} FROM serving_view ORDER BY {} DESC, location LIMIT %s").format(
        columns, sql.Identifier(by)
    )


def location_sql() -> sql.Composed:
    """One location's row; parameter: the location."""
    columns = sql.SQL(", ").join(map(sql.Identifier, view.COLUMNS))
    return sql.SQL("SELECT {} FROM serving_view WHERE location = %s").format(columns)


def totals_sql() -> str:
    """Every measure summed over the batch part and over the speed part, one row each."""
    sums = ", ".join(f"CAST(COALESCE(SUM({m}), 0) AS BIGINT) AS {m}" for m in view.MEASURE_NAMES)
    return f"""
        SELECT 'batch' AS part, {sums} FROM batch_serving
        UNION ALL
        SELECT 'speed' AS part, {sums} FROM speed_serving
    """


BATCH_CUTOFF = "SELECT cutoff_day FROM batch_meta"


def serving_view(settings: Settings | None = None) -> pd.DataFrame:
    """Every location with every measure of the view, sorted by location."""
    return _typed(warehouse.fetch_frame(serving_view_sql(), settings=settings))


def top(n: int = 10, *, by: str = "tweet_count", settings: Settings | None = None) -> pd.DataFrame:
    """The ``n`` locations with the largest ``by`` (ties broken by location)."""
    if by not in view.MEASURE_NAMES:
        raise LambdaDemoError(
            f"Unknown measure {by!r}: choose one of {', '.join(view.MEASURE_NAMES)}"
        )
    return _typed(warehouse.fetch_frame(top_sql(by), (n,), settings=settings))


def location(name: str, *, settings: Settings | None = None) -> pd.DataFrame:
    """One location's row (empty if the location has no tweets yet)."""
    return _typed(warehouse.fetch_frame(location_sql(), (name,), settings=settings))


def totals(settings: Settings | None = None) -> pd.DataFrame:
    """All locations summed, split into the batch part and the speed part (one snapshot).

    The parts are the warehouse's ``batch_serving`` and ``speed_serving``, the two halves
    ``serving_view`` adds up, so the split is the view's own.
    """
    return _typed(warehouse.fetch_frame(totals_sql(), settings=settings)).set_index("part")


def batch_cutoff(settings: Settings | None = None) -> str | None:
    """The current batch view's cutoff day D (ISO date), or None before the first batch run."""
    frame = warehouse.fetch_frame(BATCH_CUTOFF, settings=settings)
    return None if frame.empty else frame["cutoff_day"].iloc[0].isoformat()


# --- The serving union at D, one step at a time (notebook 04) ---------------------------------
# Each step reads the warehouse's own views, so the rule that splits the days at the cutoff is
# the one serving applies (`contract.sql_batch_days`, rendered in ``warehouse.views_ddl``).


def batch_part(settings: Settings | None = None) -> pd.DataFrame:
    """Step 1: the published batch run's rows (``batch_serving``), one per location: days < D."""
    measures = ", ".join(view.MEASURE_NAMES)
    query = f"SELECT run_id, location, {measures} FROM batch_serving ORDER BY location"
    return _typed(warehouse.fetch_frame(query, settings=settings))


def speed_part(settings: Settings | None = None) -> pd.DataFrame:
    """Step 2: the serving deployment's rows from D on (``speed_serving``), one per day and
    location, not summed yet."""
    measures = ", ".join(view.MEASURE_NAMES)
    query = (
        f"SELECT deployment, ingest_day, location, {measures} FROM speed_serving "
        "ORDER BY ingest_day, location"
    )
    return _typed(warehouse.fetch_frame(query, settings=settings))


def union_of_parts(settings: Settings | None = None) -> pd.DataFrame:
    """Step 3: both parts stacked (``UNION ALL``), in one snapshot, with the part each row
    came from: a location can appear several times, once per part and speed day."""
    measures = ", ".join(view.MEASURE_NAMES)
    query = f"""
        SELECT 'batch' AS part, location, {measures} FROM batch_serving
        UNION ALL
        SELECT 'speed' AS part, location, {measures} FROM speed_serving
        ORDER BY location, part
    """
    return _typed(warehouse.fetch_frame(query, settings=settings))


def sum_per_location(union: pd.DataFrame) -> pd.DataFrame:
    """Step 4: every measure summed per location, as ``serving_view``'s ``GROUP BY`` does.

    Adding is right only because every measure of the view is additive (notebook 04 says
    which measures are not, and what to keep instead).
    """
    summed = union.groupby(view.KEY, sort=True)[list(view.MEASURE_NAMES)].sum()
    return summed.astype("int64").reset_index()
