"""docs/WORKSHOP.md's agendas add up, and name the notebooks that exist.

A workshop plan that does not fit its session is the first thing an instructor discovers in
the room, too late. Each ``## Agenda: ...`` heading announces a length ("3 hours"); its table's
rows must follow each other without gaps or overlaps, fill exactly that length, give the room
a break and time for exercises, and cover every notebook in ``notebooks/`` (no more, no less),
so adding or renaming a notebook fails here until the plans say where it goes.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import textwrap
from dataclasses import dataclass
from itertools import pairwise

import pytest

from lambda_demo.settings import REPO_ROOT

WORKSHOP = REPO_ROOT / "docs" / "WORKSHOP.md"
NOTEBOOKS = REPO_ROOT / "notebooks"
NO_NOTEBOOK = "-"
SPAN = re.compile(r"(\d{1,2}):(\d{2})\s*[-–]\s*(\d{1,2}):(\d{2})")
EXERCISES = re.compile(r"\bexercises? (\d+) min\b", re.IGNORECASE)


@dataclass(frozen=True)
class Row:
    start: int  # minutes
    end: int
    notebooks: tuple[str, ...]
    what: str


@dataclass(frozen=True)
class Plan:
    heading: str
    rows: tuple[Row, ...]


def minutes(hours: str, mins: str) -> int:
    return int(hours) * 60 + int(mins)


def sections(text: str) -> dict[str, list[str]]:
    """``## `` heading -> the lines under it, up to the next heading of that level."""
    found: dict[str, list[str]] = {}
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("## "):
            lines = found.setdefault(line[3:].strip(), [])
        else:
            lines.append(line)
    return found


def table(lines: list[str]) -> list[dict[str, str]]:
    """The first Markdown table in ``lines``, as one dict per row keyed by the header."""
    rows = [line for line in lines if line.startswith("|")]
    assert rows, "no table"
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]
    header, separator, *body = cells
    assert all(re.fullmatch(r":?-+:?", c) for c in separator), "header, then |---|"
    return [dict(zip(header, row, strict=True)) for row in body]


def parse_plan(heading: str, lines: list[str]) -> Plan:
    rows = []
    for cells in table(lines):
        span = SPAN.fullmatch(cells["time"])
        assert span, f"{heading}: time {cells['time']!r} is not h:mm-h:mm"
        names = tuple(
            name.strip() for name in cells["notebook"].split(",") if name.strip() != NO_NOTEBOOK
        )
        rows.append(
            Row(
                minutes(*span.groups()[:2]),
                minutes(*span.groups()[2:]),
                names,
                cells["what happens"],
            )
        )
    return Plan(heading, tuple(rows))


def plans() -> list[Plan]:
    return [
        parse_plan(heading, lines)
        for heading, lines in sections(WORKSHOP.read_text()).items()
        if heading.startswith("Agenda")
    ]


def announced_minutes(heading: str) -> int:
    match = re.search(r"(\d+(?:\.\d+)?) hours?\b", heading)
    assert match, f"{heading!r}: announce the session's length, e.g. '3 hours'"
    return round(float(match[1]) * 60)


def notebook_names() -> set[str]:
    return {path.stem for path in NOTEBOOKS.glob("*.ipynb")}


def test_there_is_a_three_hour_plan() -> None:
    assert [p for p in plans() if announced_minutes(p.heading) == 180]


@pytest.mark.parametrize("plan", plans(), ids=lambda plan: plan.heading)
def test_rows_follow_each_other_and_fill_the_announced_length(plan: Plan) -> None:
    for row in plan.rows:
        assert row.end > row.start, f"{plan.heading}: {row}"
    for before, after in pairwise(plan.rows):
        assert after.start == before.end, f"{plan.heading}: a gap or overlap before {after}"
    length = plan.rows[-1].end - plan.rows[0].start
    assert length == announced_minutes(plan.heading), f"{plan.heading}: rows add up to {length}"
    if clock := SPAN.search(plan.heading):  # "(09:00-17:00)": the table runs exactly then
        assert (plan.rows[0].start, plan.rows[-1].end) == (
            minutes(*clock.groups()[:2]),
            minutes(*clock.groups()[2:]),
        )


@pytest.mark.parametrize("plan", plans(), ids=lambda plan: plan.heading)
def test_has_a_break_and_exercise_time(plan: Plan) -> None:
    breaks = [r for r in plan.rows if not r.notebooks and re.search(r"\bbreak\b", r.what, re.I)]
    assert breaks, f"{plan.heading}: no break"
    exercise = sum(int(m) for row in plan.rows for m in EXERCISES.findall(row.what))
    assert exercise > 0, f"{plan.heading}: no 'exercises N min' anywhere"
    for row in plan.rows:
        found = sum(int(m) for m in EXERCISES.findall(row.what))
        assert found < row.end - row.start, f"{plan.heading}: exercises fill all of {row}"


@pytest.mark.parametrize("plan", plans(), ids=lambda plan: plan.heading)
def test_names_every_notebook_and_only_those(plan: Plan) -> None:
    named = {name for row in plan.rows for name in row.notebooks}
    existing = notebook_names()
    assert existing, "no notebooks found: the check would prove nothing"
    assert named <= existing, f"{plan.heading}: no such notebook {sorted(named - existing)}"
    assert existing <= named, f"{plan.heading}: leaves out {sorted(existing - named)}"


def test_run_time_table_lists_every_notebook() -> None:
    rows = table(sections(WORKSHOP.read_text())["How long things take"])
    assert {row["notebook"] for row in rows} == notebook_names()


def python_blocks(lines: list[str]) -> list[str]:
    blocks, current = [], None
    for line in lines:
        stripped = line.strip()
        if current is None and stripped == "```python":
            current = []
        elif current is not None and stripped == "```":
            blocks.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def test_the_code_that_stops_queries_after_an_interrupt_is_real() -> None:
    """Every import resolves; every call of a lambda_demo function fits its signature."""
    from lambda_demo.speed import run

    blocks = python_blocks(sections(WORKSHOP.read_text())["Kernels and memory"])
    assert blocks, "the section shows no code"
    known = {"stop_queries": run.stop_queries}
    for block in blocks:
        tree = ast.parse(textwrap.dedent(block))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = importlib.import_module(node.module or "")
                for alias in node.names:
                    known[alias.asname or alias.name] = getattr(module, alias.name)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if (function := known.get(node.func.id)) is not None:
                inspect.signature(function).bind(
                    *node.args, **{k.arg: k.value for k in node.keywords if k.arg}
                )
    assert set(known) >= {"stop_queries", "get_spark"}
