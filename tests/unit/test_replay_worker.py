"""A flat-out replay parses in a worker process: it must hand over exactly what the
in-process reading gives, line for line, and say so when it dies."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from lambda_demo.errors import LambdaDemoError
from lambda_demo.ingestion import replay, sample


@pytest.fixture(scope="module")
def sample_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "sample.jsonl.gz"
    sample.write(path, tweets=3_000, days=2, seed=5)
    lines = gzip.decompress(path.read_bytes()).split(b"\n")
    lines[10:10] = [b"", b"   ", b"\xff\xfe not utf-8", b"x" * 100]  # blank, garbage
    path.write_bytes(gzip.compress(b"\n".join(lines)))
    return path


@pytest.mark.parametrize("loop_round", [0, 1])
def test_the_worker_hands_over_what_the_in_process_reading_gives(
    sample_file: Path, loop_round: int
) -> None:
    expected = list(replay.judged_lines([sample_file], loop_round, 3))
    got = list(replay.judged_in_worker([sample_file], loop_round, 3))
    assert len(got) > 3_000
    assert got == expected
    assert {prepared.reason for _, prepared, _ in got if prepared} > {None, "not_utf8"}


def test_a_sender_that_stops_early_stops_the_worker(sample_file: Path) -> None:
    lines = replay.judged_in_worker([sample_file], 0, 3)
    assert next(lines)[1] is not None
    lines.close()  # the generator's cleanup kills and joins the worker; nothing hangs


def test_a_worker_that_fails_says_so(tmp_path: Path) -> None:
    with pytest.raises((LambdaDemoError, FileNotFoundError)):
        list(replay.judged_in_worker([tmp_path / "missing.jsonl.gz"], 0, 3))
