"""The late-data lesson on the real stack: the same result on every run, each delivery's fate
as the contract and the watermark say, and a serving view that ends exact."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from helpers import isolated_settings

from lambda_demo.errors import LambdaDemoError
from lambda_demo.serving.check import check
from lambda_demo.tutorial.late_data import (
    COUNTED_BY_SPEED,
    DUPLICATE,
    FORGOTTEN_DUPLICATE,
    LATE,
    SCRIPT,
    late_data_figure,
    play,
)

pytestmark = pytest.mark.integration

DELAY = timedelta(hours=25)  # speed.stream.WATERMARK

# What each delivery must become, from the scenario's definition (speed outcome, batch outcome,
# fate). The watermark of a step is the newest ingest time of the steps before it minus 25 h;
# the speed layer drops a delivery older than it, forgets a tweet id once the watermark has
# passed its first delivery's ingest time + 25 h, and the batch layer counts each tweet id
# once, at its first delivery (contract.FIRST_DELIVERY_ORDER).
EXPECTED = {
    "on time": ("counted", "counted", COUNTED_BY_SPEED),
    "just before midnight": ("counted", "counted", COUNTED_BY_SPEED),
    # Same id 5 minutes later, across midnight: the speed layer remembers it; batch counts
    # the first delivery.
    "duplicate after midnight": ("dropped: duplicate", "not counted", DUPLICATE),
    "next morning": ("counted", "counted", COUNTED_BY_SPEED),
    # 1 Nov 18:00 arrives when the newest is 2 Nov 08:00: watermark 1 Nov 07:00, still ahead.
    "late, within the watermark": ("counted", "counted", COUNTED_BY_SPEED),
    "the night after": ("counted", "counted", COUNTED_BY_SPEED),
    # 1 Nov 12:00 arrives when the newest is 3 Nov 02:00: watermark 2 Nov 01:00, passed.
    "later than the watermark": ("dropped: late", "counted", LATE),
    "day three, noon": ("counted", "counted", COUNTED_BY_SPEED),
    # First delivered 1 Nov 09:00; the newest before it is 3 Nov 12:00, so the watermark
    # (2 Nov 11:00) has passed 1 Nov 09:00 + 25 h: the id is forgotten and counted again,
    # on 2 Nov; the batch view counts the first delivery only.
    "re-sent 26.5 hours later": ("counted", "not counted", FORGOTTEN_DUPLICATE),
}


def _png(frame: pd.DataFrame) -> bytes:
    figure = late_data_figure(frame)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def test_late_data_lesson_is_identical_on_every_run_and_ends_exact(stack_home: Path, spark) -> None:
    settings = isolated_settings(stack_home, prefix="late", partitions=1)

    first = play(settings)
    second = play(settings)  # the same namespace again: as when a notebook is re-run

    pd.testing.assert_frame_equal(first, second)
    assert _png(first) == _png(second)
    assert list(first["name"]) == [record.name for record in SCRIPT]
    observed = {row.name: (row.speed, row.batch, row.fate) for row in first.itertuples()}
    assert observed == EXPECTED
    for record, watermark in zip(SCRIPT, first["watermark"], strict=True):
        earlier = [r.ingest_time for r in SCRIPT if r.step < record.step]
        expected = pd.Timestamp(max(earlier) - DELAY) if earlier else None
        assert (watermark if pd.notna(watermark) else None) == expected, record.name
    result = check(settings)
    assert result.mismatches.empty, str(result)
    assert result.tweets == len({record.tweet_id for record in SCRIPT})


def test_late_data_lesson_needs_a_one_partition_topic(tmp_path: Path) -> None:
    with pytest.raises(LambdaDemoError, match="one partition"):
        play(isolated_settings(tmp_path, prefix="late", partitions=3))
