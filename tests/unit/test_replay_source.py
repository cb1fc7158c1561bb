"""A replay's source is its content: a file's name says nothing about what Kafka already has."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from lambda_demo.ingestion.replay import source_id


def _file(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def test_two_files_with_one_name_are_two_sources(tmp_path: Path) -> None:
    first = _file(tmp_path / "monday", "tweets.jsonl", '{"a": 1}\n')
    second = _file(tmp_path / "tuesday", "tweets.jsonl", '{"a": 2}\n')
    assert source_id([first], None) != source_id([second], None)


def test_the_same_content_under_another_name_resumes_as_the_same_source(tmp_path: Path) -> None:
    first = _file(tmp_path, "a.jsonl", '{"a": 1}\n')
    copy = _file(tmp_path, "b.jsonl", '{"a": 1}\n')
    assert source_id([first], None) == source_id([copy], None)


def test_start_order_and_round_make_different_sources(tmp_path: Path) -> None:
    one = _file(tmp_path, "one.jsonl", "1\n")
    two = _file(tmp_path, "two.jsonl", "2\n")
    ids = {
        source_id([one, two], None),
        source_id([two, one], None),
        source_id([one, two], datetime(2026, 1, 1, tzinfo=UTC)),
        source_id([one, two], None, loop_round=1),
    }
    assert len(ids) == 4
