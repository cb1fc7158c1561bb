"""Keep the notebooks consistent: navigation cells, the contents page, one clean execution.

Usage::

    python -m lambda_demo.tutorial.notebooks nav        # navigation cells + notebooks/README.md
    python -m lambda_demo.tutorial.notebooks execute    # run every notebook in place
    python -m lambda_demo.tutorial.notebooks execute 02_batch_layer.ipynb   # just some of them

``nav`` finds the numbered notebooks (``NN_name.ipynb``) by sorted file name, reads each
one's title (its first heading, or a bold first line) and purpose (the italic line under it),
and writes a navigation cell - previous / Contents / next - at the top of each. The cell is
found again by a marker in its metadata (and in its text), so running ``nav`` twice changes
nothing. Solutions in ``notebooks/solutions/`` get a cell pointing back to their notebook.
It also regenerates ``notebooks/README.md``, the table of contents.

``execute`` runs the numbered notebooks in order, then the solutions, each in a fresh
``python3`` kernel started in the notebook's folder, and saves it in place - but only if no
cell produced an error and no output holds a local path, so committed outputs always come
from one clean run. ``--fresh-home`` (what ``make notebooks`` uses) gives each notebook a new,
empty ``LAMBDA_DEMO_HOME`` and wipes it afterwards: every committed output then proves that
its notebook runs alone, on a machine where no other notebook ever ran.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nbformat

from lambda_demo.settings import REPO_ROOT

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
SOLUTIONS_DIR = NOTEBOOKS_DIR / "solutions"
NAV_MARKER = "<!-- lambda-demo:nav -->"
"""Also written in the cell's text, so the cell is found even if an editor drops metadata."""
GLOSSARY = "GLOSSARY.md"
"""The glossary page, beside the notebooks; every navigation line links to it."""
NAV_METADATA_KEY = "lambda_demo"
CELL_TIMEOUT_SECONDS = 900
KERNEL_NAME = "python3"
KERNELSPEC = {"name": KERNEL_NAME, "display_name": "Python 3", "language": "python"}

_NUMBERED = re.compile(r"(\d{2})_[a-z0-9_]+\.ipynb")
_SOLUTION = re.compile(r"(\d{2})_solutions\.ipynb")
_HEADING = re.compile(r"#{1,6}\s+(.+)")
_NUMBER_PREFIX = re.compile(r"\d{2}\s*[·.:-]\s*")  # "02 · Batch" -> "Batch": links add it back
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"_(.+)_|\*(.+)\*")
_PART = re.compile(r"""draw\(\s*highlight\s*=\s*["'](\w+)["']""")
_PART_NAMES = {
    "all": "the whole architecture",
    "ingestion": "ingestion (Kafka)",
    "batch": "batch layer (S3 + warehouse)",
    "speed": "speed layer (Spark Structured Streaming)",
    "serving": "serving layer (SQL view)",
}
# Absolute local paths must never be committed in outputs.
_LOCAL_PATHS = (str(REPO_ROOT), "/tmp/", "/root/", "/home/")


@dataclass(frozen=True)
class NotebookInfo:
    """What the contents page and the navigation cells say about one notebook."""

    path: Path
    number: str
    title: str
    purpose: str
    part: str
    needs: str = "-"
    """What to have done first, from the notebook's metadata (``lambda_demo.needs``)."""
    minutes: int | None = None
    """Time to read it and do its exercises (``lambda_demo.minutes``), not its run time."""

    @property
    def short_title(self) -> str:
        """The title up to its first colon, for the navigation line ("The batch layer")."""
        return self.title.split(":", 1)[0].strip()


def numbered_notebooks(folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    return sorted(p for p in folder.glob("*.ipynb") if _NUMBERED.fullmatch(p.name))


def solution_notebooks(folder: Path = SOLUTIONS_DIR) -> list[Path]:
    return sorted(p for p in folder.glob("*.ipynb") if _SOLUTION.fullmatch(p.name))


def _is_nav(cell: nbformat.NotebookNode) -> bool:
    marked = cell.get("metadata", {}).get(NAV_METADATA_KEY, {}).get("nav", False)
    return bool(marked) or NAV_MARKER in cell.get("source", "")


def _strip_markup(text: str) -> str:
    return text.replace("**", "").replace("__", "").strip()


def describe(path: Path) -> NotebookInfo:
    """Title, purpose and architecture part of one notebook, read from its cells."""
    nb = nbformat.read(path, as_version=4)
    title, purpose = path.stem, ""
    for cell in nb.cells:
        if cell.cell_type != "markdown" or _is_nav(cell):
            continue
        lines = [line.strip() for line in cell.source.splitlines() if line.strip()]
        if not lines:
            continue
        heading = _HEADING.fullmatch(lines[0]) or _BOLD.fullmatch(lines[0])
        if heading is None:
            continue
        title = _NUMBER_PREFIX.sub("", _strip_markup(heading.group(1)), count=1)
        for line in lines[1:]:
            italic = _ITALIC.fullmatch(line)
            if italic:
                purpose = (italic.group(1) or italic.group(2)).strip()
                break
        break
    part = "all"
    for cell in nb.cells:
        found = _PART.search(cell.source) if cell.cell_type == "code" else None
        if found:
            part = found.group(1)
            break
    course = nb.metadata.get(NAV_METADATA_KEY, {})
    return NotebookInfo(
        path=path,
        number=path.name[:2],
        title=title,
        purpose=purpose,
        part=part,
        needs=course.get("needs", "-"),
        minutes=course.get("minutes"),
    )


def _nav_cell(source: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_markdown_cell(source)
    cell.id = "nav"
    cell.metadata[NAV_METADATA_KEY] = {"nav": True}
    return cell


def _link(info: NotebookInfo, prefix: str = "") -> str:
    return f"[{info.number} · {info.short_title}]({prefix}{info.path.name})"


def nav_source(infos: list[NotebookInfo], index: int) -> str:
    """``← previous | Contents | next →`` for the notebook at ``index``."""
    parts = []
    if index > 0:
        parts.append(f"← {_link(infos[index - 1])}")
    parts += ["[Contents](README.md)", f"[Glossary]({GLOSSARY})"]
    if index + 1 < len(infos):
        parts.append(f"{_link(infos[index + 1])} →")
    return f"{NAV_MARKER}\n" + " | ".join(parts)


def _set_nav(path: Path, source: str) -> bool:
    """Put the navigation cell first (replacing an old one); True if the file changed."""
    nb = nbformat.read(path, as_version=4)
    others = [cell for cell in nb.cells if not _is_nav(cell)]
    current = [cell for cell in nb.cells if _is_nav(cell)]
    unchanged = (
        len(current) == 1
        and nb.cells[0] is current[0]
        and current[0].source == source
        and current[0].get("id") == "nav"
        and current[0].get("metadata", {}).get(NAV_METADATA_KEY, {}).get("nav")
    )
    if unchanged:
        return False
    nb.cells = [_nav_cell(source), *others]
    _write(nb, path)
    return True


def _write(nb: nbformat.NotebookNode, path: Path) -> None:
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nbformat.validate(nb)
    text = nbformat.writes(nb)
    if not text.endswith("\n"):
        text += "\n"
    path.write_text(text, encoding="utf-8")


def contents_page(infos: list[NotebookInfo], solutions: list[Path]) -> str:
    """The text of ``notebooks/README.md``."""
    solved = {path.name[:2]: path for path in solutions}
    lines = [
        "# Notebooks: the Lambda Architecture, step by step",
        "",
        "Each one starts the embedded stack if needed and runs top to bottom in a fresh kernel",
        "(`.venv/bin/jupyter lab notebooks/`). The committed outputs come from `make notebooks`,",
        "which runs each notebook alone in a new, empty `LAMBDA_DEMO_HOME`, so every one is",
        "proven to stand on its own. Each notebook ends with graded exercises",
        "(`lambda_demo.grade`); their solutions, which finish in",
        '`assert`s, are in [`solutions/`](solutions/). "You need" is what to have *read*',
        'first (the notebooks do not need each other\'s data); "time" is for reading and the',
        "exercises, not the run time. The words they use are in the [glossary](GLOSSARY.md).",
        "",
        "| # | notebook | what it is about | architecture | you need | time | solutions |",
        "|---|---|---|---|---|---|---|",
    ]
    for info in infos:
        solution = solved.get(info.number)
        solution_link = f"[{solution.name}](solutions/{solution.name})" if solution else "-"
        minutes = f"{info.minutes} min" if info.minutes else "-"
        lines.append(
            f"| {info.number} | [{info.title}]({info.path.name}) | {info.purpose} | "
            f"{_PART_NAMES.get(info.part, info.part)} | {info.needs} | {minutes} | "
            f"{solution_link} |"
        )
    lines += [
        "",
        "This page and the navigation line at the top of each notebook are generated by",
        "`python -m lambda_demo.tutorial.notebooks nav`; edit the notebooks' titles, not this",
        "file.",
        "",
    ]
    return "\n".join(lines)


def nav(folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """Insert or update every navigation cell and rewrite the contents page."""
    numbered = numbered_notebooks(folder)
    infos = [describe(path) for path in numbered]
    changed = [path for i, path in enumerate(numbered) if _set_nav(path, nav_source(infos, i))]
    by_number = {info.number: info for info in infos}
    solutions = solution_notebooks(folder / "solutions")
    for path in solutions:
        info = by_number.get(path.name[:2])
        back = f"← back to {_link(info, '../')}" if info else "← back"
        links = f"[Contents](../README.md) | [Glossary](../{GLOSSARY})"
        if _set_nav(path, f"{NAV_MARKER}\n{back} | {links}"):
            changed.append(path)
    readme = folder / "README.md"
    text = contents_page(infos, solutions)
    if not readme.exists() or readme.read_text(encoding="utf-8") != text:
        readme.write_text(text, encoding="utf-8")
        changed.append(readme)
    return changed


class NotebookError(RuntimeError):
    """A notebook failed or produced output that must not be committed; it was not saved."""


def problems(nb: nbformat.NotebookNode) -> list[str]:
    """Why a notebook must not be saved: error outputs, and local paths in sources or outputs."""
    found = []
    for index, cell in enumerate(nb.cells):
        if str(REPO_ROOT) in cell.get("source", ""):
            found.append(f"cell {index}: its source contains the local path {str(REPO_ROOT)!r}")
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                found.append(f"cell {index}: {output.get('ename')}: {output.get('evalue')}")
            text = json.dumps(output, ensure_ascii=False)
            for local in _LOCAL_PATHS:
                if local in text:
                    found.append(f"cell {index}: output contains the local path {local!r}")
    return found


def execute_one(path: Path, *, timeout: int = CELL_TIMEOUT_SECONDS) -> float:
    """Run one notebook in a fresh kernel in its own folder; save it only if it is clean."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=KERNEL_NAME,
        allow_errors=False,
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    started = time.monotonic()
    try:
        client.execute()
    except CellExecutionError as exc:
        raise NotebookError(f"{path.name} failed, not saved:\n{exc}") from exc
    found = problems(nb)
    if found:
        raise NotebookError(f"{path.name} not saved:\n  " + "\n  ".join(found))
    _write(nb, path)
    return time.monotonic() - started


@contextmanager
def fresh_home() -> Iterator[None]:
    """A new, empty ``LAMBDA_DEMO_HOME`` for the kernels started inside; wiped on the way out
    (``stack reset`` stops its services and deletes its data, wherever PostgreSQL keeps it)."""
    before = os.environ.get("LAMBDA_DEMO_HOME")
    home = tempfile.mkdtemp(prefix="lambda-demo-notebook-")
    os.environ["LAMBDA_DEMO_HOME"] = home
    try:
        yield
    finally:
        cli = [sys.executable, "-m", "lambda_demo.cli", "stack", "reset"]
        subprocess.run(cli, env=dict(os.environ), capture_output=True, check=False)
        if before is None:
            del os.environ["LAMBDA_DEMO_HOME"]
        else:
            os.environ["LAMBDA_DEMO_HOME"] = before


def execute(
    names: Sequence[str] = (), folder: Path = NOTEBOOKS_DIR, *, fresh: bool = False
) -> dict[str, float]:
    """Numbered notebooks in order, then the solutions; raise at the end if any failed.

    A failed notebook is not saved, and the others still run: one broken notebook should
    not leave the rest with stale outputs. ``fresh`` runs each in a `fresh_home`.
    """
    paths = numbered_notebooks(folder) + solution_notebooks(folder / "solutions")
    if names:
        paths = [p for p in paths if p.name in names or p.stem in names]
    timings: dict[str, float] = {}
    failures: list[str] = []
    for path in paths:
        label = path.relative_to(folder).as_posix()
        print(f"executing {label} ...", flush=True)
        try:
            if fresh:
                with fresh_home():
                    timings[label] = execute_one(path)
            else:
                timings[label] = execute_one(path)
        except NotebookError as exc:
            failures.append(str(exc))
            print(f"  FAILED (not saved): {label}", flush=True)
            continue
        print(f"  ok in {timings[label]:.0f} s", flush=True)
    if failures:
        raise NotebookError("\n\n".join(failures))
    return timings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lambda_demo.tutorial.notebooks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("nav", help="insert navigation cells and regenerate notebooks/README.md")
    run = commands.add_parser("execute", help="run every notebook in place (clean outputs only)")
    run.add_argument("names", nargs="*", help="only these notebooks (file names)")
    run.add_argument(
        "--fresh-home",
        action="store_true",
        help="each notebook in a new, empty LAMBDA_DEMO_HOME (wiped afterwards)",
    )
    args = parser.parse_args(argv)
    if args.command == "nav":
        for path in nav():
            print(f"updated {path.relative_to(REPO_ROOT).as_posix()}")
        return 0
    try:
        execute(args.names, fresh=args.fresh_home)
    except NotebookError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
