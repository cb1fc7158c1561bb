"""Graded exercises: ``grade(exercise_id, answer)`` runs a learner's answer on the real stack.

Each exercise lives in a module named after what it teaches, and grades against a small
scenario of its own (see ``base``). Usage in a notebook::

    from lambda_demo import grade
    MY_SQL = "SELECT ..."
    grade("02.1", MY_SQL)

``reference(exercise_id)`` is the answer the solutions notebooks grade.
"""

from __future__ import annotations

from typing import Any

from lambda_demo.settings import Settings, get_settings
from lambda_demo.tutorial.grading import (
    dedup_then_cut,
    new_measure,
    non_additive,
    producer_settings,
    serving_merge,
    speed_aggregation,
)
from lambda_demo.tutorial.grading.base import Exercise, Mistake, Result

__all__ = ["EXERCISES", "Exercise", "Mistake", "Result", "grade", "reference"]

EXERCISES: dict[str, Exercise] = {
    module.EXERCISE.id: module.EXERCISE
    for module in (
        producer_settings,
        dedup_then_cut,
        speed_aggregation,
        serving_merge,
        new_measure,
        non_additive,
    )
}


def reference(exercise_id: str) -> Any:
    """The reference answer to an exercise (the solutions notebooks grade it)."""
    return _exercise(exercise_id).reference


def grade(exercise_id: str, answer: Any, *, settings: Settings | None = None) -> Result:
    """Run ``answer`` on the exercise's scenario and say whether, and where, it is wrong.

    An empty answer (None, ``...`` or blank) is "not attempted": the result says how to start,
    and a notebook that prints it still runs to the end.
    """
    return _exercise(exercise_id).grade(answer, settings or get_settings())


def _exercise(exercise_id: str) -> Exercise:
    try:
        return EXERCISES[exercise_id]
    except KeyError:
        known = ", ".join(sorted(EXERCISES))
        raise KeyError(f"No exercise {exercise_id!r}; the graded ones are {known}.") from None
