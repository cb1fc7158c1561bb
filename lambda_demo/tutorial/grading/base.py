"""What every graded exercise shares: a result, known mistakes, and the grading loop.

An exercise runs a learner's answer on a **scenario** of its own (a warehouse schema, a topic,
a small Spark DataFrame: whatever its layer works on), never on the notebook's data, and
compares what the answer produced with an expected result computed independently of the
package's own code. The first difference is said in words; when the answer behaves exactly
like a known mistake, that mistake's hint is added.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lambda_demo import view
from lambda_demo.serving.check import compare
from lambda_demo.settings import Settings


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
    """A known wrong answer: graded like the learner's, its outcome identifies the mistake."""

    answer: Any
    hint: str


class AnswerFailed(Exception):
    """The answer could not run (a query the warehouse refused, a function that raised)."""


class Exercise(ABC):
    """One graded exercise. Subclasses say how an answer runs and how outcomes compare."""

    id: str
    task: str
    start: str
    """How to begin, shown when the exercise is not attempted."""
    reference: Any
    mistakes: tuple[Mistake, ...]

    @abstractmethod
    def prepare(self, settings: Settings) -> Any:
        """Build the scenario (rebuilt at every grading) and return what ``outcome`` runs on."""

    @abstractmethod
    def outcome(self, answer: Any, scenario: Any) -> Any:
        """What the answer produces on the scenario; raises AnswerFailed in words."""

    @abstractmethod
    def expected(self) -> Any:
        """The right outcome, computed without the package's implementation of the rule."""

    @abstractmethod
    def difference(self, expected: Any, got: Any) -> str | None:
        """The first difference in words, or None when there is none."""

    def mistake_outcome(self, mistake: Mistake, scenario: Any) -> Any:
        """What a known mistake produces on the scenario: by default, run like an answer.

        An exercise whose answers take a whole pipeline run may predict it instead, from the
        same independent computation as ``expected``, to keep grading quick.
        """
        return self.outcome(mistake.answer, scenario)

    def grade(self, answer: Any, settings: Settings) -> Result:
        """Run the answer, compare, and name the known mistake it makes, if any."""
        if unattempted(answer):
            return Result(self.id, None, self.start)
        scenario = self.prepare(settings)
        try:
            got = self.outcome(answer, scenario)
        except AnswerFailed as exc:
            return Result(self.id, False, str(exc))
        problem = self.difference(self.expected(), got)
        if problem is None:
            return Result(self.id, True, "right on every case of the scenario.")
        for index, mistake in enumerate(self.mistakes):
            key = (self.id, index)
            if key not in _MISTAKE_OUTCOMES:
                _MISTAKE_OUTCOMES[key] = self.mistake_outcome(mistake, scenario)
            if self.difference(_MISTAKE_OUTCOMES[key], got) is None:
                return Result(self.id, False, f"{problem}. Hint: {mistake.hint}")
        return Result(self.id, False, problem)


_MISTAKE_OUTCOMES: dict[tuple[str, int], Any] = {}
"""What each known mistake produced, by (exercise, mistake): a scenario is the same at every
grading, so a mistake's outcome is too. Worked out once per kernel, a wrong answer to an
exercise that runs Spark costs one streaming run, not one per known mistake."""


def unattempted(answer: Any) -> bool:
    """None, ``...`` or blank text: the notebook's placeholder, not an answer."""
    return answer is None or answer is Ellipsis or (isinstance(answer, str) and not answer.strip())


def view_difference(expected: pd.DataFrame, got: pd.DataFrame) -> str | None:
    """The first difference between two per-location views, in words (None if none)."""
    missing = [c for c in view.COLUMNS if c not in got.columns]
    if missing:
        return f"your result has no column {', '.join(missing)} (it has {', '.join(got.columns)})"
    got = got[list(view.COLUMNS)]
    if got[view.KEY].duplicated().any():
        twice = got.loc[got[view.KEY].duplicated(), view.KEY].iloc[0]
        return f"location {twice!r} appears in more than one row: group by location"
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
