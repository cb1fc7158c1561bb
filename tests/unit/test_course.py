"""The course's structure: every notebook links the contents and the glossary, every link in
its navigation line resolves, and no notebook shows code as printed source text."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from lambda_demo.tutorial import notebooks

ALL = notebooks.numbered_notebooks() + notebooks.solution_notebooks()
LINK = re.compile(r"\]\(([^)#]+)")


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_each_notebook_opens_with_links_to_the_contents_and_the_glossary(path: Path) -> None:
    first = nbformat.read(path, as_version=4).cells[0]
    assert first.cell_type == "markdown" and notebooks.NAV_MARKER in first.source
    targets = LINK.findall(first.source)
    assert {Path(t).name for t in targets} >= {"README.md", notebooks.GLOSSARY}
    for target in targets:
        assert (path.parent / target).is_file(), f"{path.name} links to missing {target}"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_every_cell_has_an_id(path: Path) -> None:
    """nbformat still invents missing ids with a warning, and will refuse them later."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    assert [i for i, cell in enumerate(cells) if "id" not in cell] == []


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_no_notebook_prints_source_instead_of_running_it(path: Path) -> None:
    code = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    assert not [source for source in code if "getsource" in source]


def test_the_glossary_links_back_to_the_contents() -> None:
    glossary = notebooks.NOTEBOOKS_DIR / notebooks.GLOSSARY
    assert "](README.md)" in glossary.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", notebooks.numbered_notebooks(), ids=lambda p: p.name)
def test_each_notebook_says_what_to_read_first_and_how_long_it_takes(path: Path) -> None:
    info = notebooks.describe(path)
    assert info.needs != "-" and info.minutes is not None and 10 <= info.minutes <= 120


def test_the_contents_page_is_the_one_nav_generates() -> None:
    infos = [notebooks.describe(path) for path in notebooks.numbered_notebooks()]
    expected = notebooks.contents_page(infos, notebooks.solution_notebooks())
    readme = notebooks.NOTEBOOKS_DIR / "README.md"
    assert readme.read_text(encoding="utf-8") == expected, "run the notebooks' `nav` command"
