"""Graded exercises: ``grade(exercise_id, answer)`` runs a learner's answer on the real stack.

An exercise is graded against a small **scenario** of its own, written into a warehouse schema
of its own (``grade_<id>``), never against the notebook's data: a scenario holds exactly the
cases that tell a right answer from the usual wrong ones (a tweet delivered on both sides of
midnight, a tie on the ingest time, a retired speed deployment...). The expected result is
computed from the scenario in pandas, independently of the SQL the package runs.

When an answer is wrong, the feedback names the first location and column that differ, with
the expected and the actual value, and, when the answer matches a known mistake (cutting before
deduplicating, the last delivery instead of the first...), the hint for that mistake.
``reference(exercise_id)`` is the answer the solutions notebooks use.

Usage in a notebook::

    from lambda_demo.tutorial.grading import grade
    MY_SQL = "SELECT ..."
    grade("02.1", MY_SQL)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pandas as pd
import psycopg2
from psycopg2 import sql as psql
from psycopg2.extras import execute_values

from lambda_demo import view
from lambda_demo.batch.recompute import RAW_DELIVERY
from lambda_demo.clients import warehouse
from lambda_demo.contract import ingest_day_of, served_by_batch, sql_speed_days
from lambda_demo.serving.check import compare
from lambda_demo.settings import Settings, get_settings
from lambda_demo.tutorial.recovery import fresh_workspace


@dataclass(frozen=True)
class Result:
    """A graded answer: ``passed`` is None when the exercise was not attempted."""

    exercise: str
    passed: bool | None
    feedback: str

    def __str__(self) -> str:
        mark = {True: "✔ passed", False: "✘ not yet", None: "· not attempted"}[self.passed]
        return f"{self.exercise} {mark}: {self.feedback}"

    __repr__ = __str__


@dataclass(frozen=True)
class Mistake:
    """A known wrong answer: the result it gives on the scenario, and what to say about it."""

    answer: str
    hint: str


@dataclass(frozen=True)
class Exercise:
    """One graded exercise: a SQL ``SELECT`` over a scenario, compared with pandas."""

    id: str
    task: str
    start: str
    reference: str
    params: dict[str, object]
    load: Callable[[psycopg2.extensions.cursor], None]
    expected: Callable[[], pd.DataFrame]
    mistakes: tuple[Mistake, ...] = ()


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- 02.1: deduplicate first, then cut ------------------------------------------------------

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


# --- 04.1: the serving merge at D -------------------------------------------------------------


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


EXERCISES: dict[str, Exercise] = {
    exercise.id: exercise
    for exercise in (
        Exercise(
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
            expected=_speed_days_expected,
            mistakes=_DEDUP_MISTAKES,
        ),
        Exercise(
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
            expected=_serving_expected,
            mistakes=_SERVING_MISTAKES,
        ),
    )
}


def reference(exercise_id: str) -> str:
    """The reference answer to an exercise (the solutions notebooks grade it)."""
    return _exercise(exercise_id).reference


def grade(exercise_id: str, answer: str | None, *, settings: Settings | None = None) -> Result:
    """Run ``answer`` on the exercise's scenario and say whether, and where, it is wrong.

    An empty answer (None, ``...`` or blank) is "not attempted": the result says how to start,
    and a notebook that prints it still runs to the end.
    """
    exercise = _exercise(exercise_id)
    if answer is None or answer is Ellipsis or not str(answer).strip():
        return Result(exercise.id, None, exercise.start)
    workspace = _scenario(exercise, settings or get_settings())
    try:
        got = _run(str(answer), exercise, workspace)
    except psycopg2.Error as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Result(exercise.id, False, f"the warehouse refused your query: {first_line}")
    problem = _difference(exercise.expected(), got)
    if problem is None:
        return Result(exercise.id, True, "right on every case of the scenario.")
    for mistake in exercise.mistakes:
        if _difference(_run(mistake.answer, exercise, workspace), got) is None:
            return Result(exercise.id, False, f"{problem}. Hint: {mistake.hint}")
    return Result(exercise.id, False, problem)


def _exercise(exercise_id: str) -> Exercise:
    try:
        return EXERCISES[exercise_id]
    except KeyError:
        known = ", ".join(sorted(EXERCISES))
        raise KeyError(f"No exercise {exercise_id!r}; the graded ones are {known}.") from None


def _scenario(exercise: Exercise, settings: Settings) -> Settings:
    """An empty schema of the exercise's own, holding its scenario (rebuilt at each grading)."""
    workspace = fresh_workspace(settings, schema="grade_" + exercise.id.replace(".", "_"))
    conn = warehouse.connect(workspace)
    try:
        with conn, conn.cursor() as cur:
            exercise.load(cur)
    finally:
        conn.close()
    return workspace


def _run(answer: str, exercise: Exercise, workspace: Settings) -> pd.DataFrame:
    """The answer's rows, in a read-only transaction that is rolled back."""
    conn = warehouse.connect(workspace)
    try:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION READ ONLY")
            cur.execute(answer, exercise.params or None)
            names = [column.name for column in cur.description or []]
            frame = pd.DataFrame(cur.fetchall(), columns=names)
        conn.rollback()
    finally:
        conn.close()
    return frame


def _difference(expected: pd.DataFrame, got: pd.DataFrame) -> str | None:
    """The first difference, in words (None if there is none)."""
    missing = [c for c in view.COLUMNS if c not in got.columns]
    if missing:
        return f"your result has no column {', '.join(missing)} (it has {', '.join(got.columns)})"
    got = got[list(view.COLUMNS)]
    if got[view.KEY].duplicated().any():
        twice = got.loc[got[view.KEY].duplicated(), view.KEY].iloc[0]
        return f"location {twice!r} appears in more than one row: GROUP BY location"
    got = got.astype({m: "int64" for m in view.MEASURE_NAMES})
    diff = compare(expected, got)
    if diff.empty:
        return None
    row = diff.iloc[0]
    location = row[view.KEY]
    if location not in set(got[view.KEY]):
        return f"location {location!r} is missing from your result"
    if location not in set(expected[view.KEY]):
        return f"location {location!r} should not be in your result"
    for m in view.MEASURE_NAMES:
        want, have = int(row[f"{m}_expected"]), int(row[f"{m}_serving"])
        if want != have:
            return f"location {location!r}, column {m}: expected {want}, got {have}"
    return "your result differs from the expected one"
