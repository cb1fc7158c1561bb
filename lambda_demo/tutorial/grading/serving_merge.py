"""Exercise 04.1, the serving merge at D: the batch view before the cutoff plus the speed
view from it, per location, from the tables themselves.

The scenario has an older batch run still in ``batch_view``, a retired speed deployment whose
rows are not deleted yet, speed days the batch layer has absorbed, and locations on one side
only.
"""

from __future__ import annotations

from datetime import date

import pandas as pd
import psycopg2
from psycopg2 import sql as psql
from psycopg2.extras import execute_values

from lambda_demo import view
from lambda_demo.tutorial.grading.base import Mistake
from lambda_demo.tutorial.grading.dedup_then_cut import CUTOFF
from lambda_demo.tutorial.grading.sql import SqlExercise

#: The batch layer's runs: the published one (r2, cutoff D) and an older one, still in the table.
BATCH_ROWS: tuple[tuple[str, str, int, int, int, int], ...] = (
    ("r1", "London", 5, 50, 5, 0),  # an older run: not published any more
    ("r2", "London", 7, 70, 7, 1),
    ("r2", "Paris", 3, 30, 0, 2),
    ("r2", "Lagos", 2, 20, 2, 2),
)
#: (deployment, ingest day, location, tweets, followers, likes, retweets)
SPEED_ROWS: tuple[tuple[str, str, str, int, int, int, int], ...] = (
    ("live", "2026-11-02", "London", 4, 40, 4, 4),  # a day before D: the batch view's now
    ("live", "2026-11-03", "London", 2, 20, 1, 0),
    ("live", "2026-11-03", "Tokyo", 6, 60, 6, 6),  # only in the speed view
    ("live", "2026-11-04", "Paris", 1, 10, 1, 1),
    ("old", "2026-11-03", "London", 9, 90, 9, 9),  # a retired deployment's rows
)
DEPLOYMENTS: tuple[tuple[str, bool], ...] = (("live", True), ("old", False))


def _load_views(cur: psycopg2.extensions.cursor) -> None:
    measures = psql.SQL(", ").join(psql.Identifier(m) for m in view.MEASURE_NAMES)
    execute_values(
        cur,
        psql.SQL("INSERT INTO batch_view (run_id, location, {}) VALUES %s").format(measures),
        BATCH_ROWS,
    )
    cur.execute("INSERT INTO batch_meta (run_id, cutoff_day) VALUES (%s, %s)", ("r2", CUTOFF))
    execute_values(
        cur,
        "INSERT INTO speed_deployments (deployment, checkpoint, serving) VALUES %s",
        [(name, f"checkpoints/{name}", serving) for name, serving in DEPLOYMENTS],
    )
    execute_values(
        cur,
        psql.SQL("INSERT INTO speed_view (deployment, ingest_day, location, {}) VALUES %s").format(
            measures
        ),
        SPEED_ROWS,
    )


def _serving_expected() -> pd.DataFrame:
    """The published run's rows plus the serving deployment's days from D, per location."""
    columns = [view.KEY, *view.MEASURE_NAMES]
    batch = pd.DataFrame(BATCH_ROWS, columns=["run_id", *columns])
    speed = pd.DataFrame(SPEED_ROWS, columns=["deployment", "ingest_day", *columns])
    serving = {name for name, is_serving in DEPLOYMENTS if is_serving}
    speed_days = speed["ingest_day"].map(date.fromisoformat) >= CUTOFF
    parts = [
        batch.loc[batch["run_id"] == "r2", columns],
        speed.loc[speed["deployment"].isin(serving) & speed_days, columns],
    ]
    merged = pd.concat(parts).groupby(view.KEY, sort=True).sum()
    return merged.astype("int64").reset_index()


_SUMS = view.sql_sum_of_measures()
_MEASURE_LIST = ", ".join(view.MEASURE_NAMES)

_SERVING_MERGE = f"""
SELECT location, {_SUMS}
FROM (
    SELECT b.location, {", ".join(f"b.{m}" for m in view.MEASURE_NAMES)}
    FROM batch_view b JOIN batch_meta m ON m.run_id = b.run_id
    UNION ALL
    SELECT v.location, {", ".join(f"v.{m}" for m in view.MEASURE_NAMES)}
    FROM speed_view v JOIN speed_deployments d ON d.deployment = v.deployment AND d.serving
    WHERE v.ingest_day >= (SELECT cutoff_day FROM batch_meta)
) AS merged
GROUP BY location
"""

_SERVING_MISTAKES = (
    Mistake(
        answer=_SERVING_MERGE.replace(
            "WHERE v.ingest_day >= (SELECT cutoff_day FROM batch_meta)", ""
        ),
        hint="the speed rows of days before D are counted as well as the batch view's: "
        "London's 2 November is in both. Take from the speed view only ingest_day >= the "
        "cutoff in batch_meta.",
    ),
    Mistake(
        answer=_SERVING_MERGE.replace(" AND d.serving", ""),
        hint="every deployment's rows are added: a retired deployment (serving = false) "
        "still has rows in speed_view until they are deleted. Join speed_deployments and "
        "keep the serving one.",
    ),
    Mistake(
        answer=_SERVING_MERGE.replace(
            "FROM batch_view b JOIN batch_meta m ON m.run_id = b.run_id", "FROM batch_view b"
        ),
        hint="every batch run in batch_view is added, not only the published one: join "
        "batch_meta on run_id.",
    ),
    Mistake(
        answer=f"""
SELECT b.location, {", ".join(f"b.{m} + v.{m} AS {m}" for m in view.MEASURE_NAMES)}
FROM (SELECT b.location, {_MEASURE_LIST} FROM batch_view b
      JOIN batch_meta m ON m.run_id = b.run_id) AS b
JOIN (SELECT location, {_SUMS} FROM speed_view v
      JOIN speed_deployments d ON d.deployment = v.deployment AND d.serving
      WHERE v.ingest_day >= (SELECT cutoff_day FROM batch_meta) GROUP BY location) AS v
  ON v.location = b.location
""",
        hint="an inner JOIN keeps only the locations present in both views: Tokyo (only "
        "in the speed view) and Lagos (only in the batch view) are lost. Stack the two "
        "views with UNION ALL, then sum per location.",
    ),
)


EXERCISE = SqlExercise(
    id="04.1",
    task="Write the serving view's SELECT: the batch view before D plus the speed "
    "view from D, per location.",
    start="assign a SQL string to a variable: SELECT location and the view's four "
    "measures, summing the published batch run (batch_view joined with batch_meta) "
    "and the serving deployment's speed rows (speed_view joined with "
    "speed_deployments WHERE serving) of the days from the cutoff on. Then call "
    "grade('04.1', your_sql).",
    reference=_SERVING_MERGE,
    params={},
    load=_load_views,
    expected_view=_serving_expected,
    mistakes=_SERVING_MISTAKES,
)
