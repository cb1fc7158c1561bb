"""Exercises answered in SQL: a ``SELECT`` over a scenario in a warehouse schema of its own.

The scenario is written into ``grade_<id>`` at every grading, and the answer runs in a
read-only transaction that is rolled back, so an answer can neither change the scenario nor
touch the notebook's tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import psycopg2

from lambda_demo.clients import warehouse
from lambda_demo.settings import Settings
from lambda_demo.tutorial.grading.base import AnswerFailed, Exercise, Mistake, view_difference
from lambda_demo.tutorial.recovery import fresh_workspace


@dataclass(frozen=True)
class SqlExercise(Exercise):
    """A ``SELECT`` per location, compared with a view computed in pandas."""

    id: str
    task: str
    start: str
    reference: str
    params: dict[str, object]
    load: Callable[[psycopg2.extensions.cursor], None]
    expected_view: Callable[[], pd.DataFrame]
    mistakes: tuple[Mistake, ...] = ()

    def prepare(self, settings: Settings) -> Settings:
        """An empty schema of the exercise's own, holding its scenario."""
        workspace = fresh_workspace(settings, schema="grade_" + self.id.replace(".", "_"))
        conn = warehouse.connect(workspace)
        try:
            with conn, conn.cursor() as cur:
                self.load(cur)
        finally:
            conn.close()
        return workspace

    def outcome(self, answer: str, scenario: Settings) -> pd.DataFrame:
        """The answer's rows, in a read-only transaction that is rolled back."""
        conn = warehouse.connect(scenario)
        try:
            with conn.cursor() as cur:
                cur.execute("SET TRANSACTION READ ONLY")
                cur.execute(str(answer), self.params or None)
                names = [column.name for column in cur.description or []]
                frame = pd.DataFrame(cur.fetchall(), columns=names)
            conn.rollback()
        except psycopg2.Error as exc:
            text = str(exc).strip()
            first_line = text.splitlines()[0] if text else type(exc).__name__
            raise AnswerFailed(f"the warehouse refused your query: {first_line}") from exc
        finally:
            conn.close()
        return frame

    def expected(self) -> pd.DataFrame:
        return self.expected_view()

    def difference(self, expected: pd.DataFrame, got: pd.DataFrame) -> str | None:
        return view_difference(expected, got)
