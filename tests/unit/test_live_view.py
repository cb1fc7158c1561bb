"""The live figure: drawn headless, shown as one notebook output that is updated in place."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import IPython
import IPython.display
import pandas as pd
import pytest

from lambda_demo.tutorial.live_view import LiveFigure, live_figure

START = datetime(2026, 11, 1, 22, tzinfo=UTC)


def _samples(n: int) -> pd.DataFrame:
    """n samples an hour apart; a batch run publishes cutoff 2 Nov at the fourth."""
    rows = [
        {
            "wall_seconds": 2.0 * i,
            "simulated_time": START + timedelta(hours=i),
            "batch_tweets": 500 if i >= 3 else 0,
            "speed_tweets": 40 * i if i < 3 else 40 * (i - 3),
            "cutoff": "2026-11-02" if i >= 3 else None,
            "lag_records": i % 3,
            "lag_simulated_seconds": 1200.0 * (i % 3),
            "lag_wall_seconds": 0.5 * (i % 3),
        }
        for i in range(n)
    ]
    # Before the replay's first record the clock has no reading: not drawn.
    return pd.DataFrame([{**rows[0], "simulated_time": None}, *rows])


def test_the_figure_has_the_parts_the_lag_and_the_batch_run() -> None:
    fig = live_figure(_samples(6), speedup=2400)
    parts, records, seconds = fig.axes[:3]
    assert [t.get_text() for t in parts.texts] == [" batch run: D = 2026-11-02"]
    assert list(records.lines[-1].get_ydata()) == [0, 1, 2, 0, 1, 2]
    assert seconds.get_ylabel() == "seconds behind\n(simulated)"
    assert seconds.child_axes[0].get_ylabel() == "wall seconds"  # from the speed-up
    headline = fig.get_suptitle()
    assert "2026-11-02 03:00 UTC: 580 tweets served (500 batch + 80 speed)" in headline
    assert "2 records, 2,400 s simulated (1.0 s wall)" in headline


def test_one_output_is_updated_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[tuple] = []
    updates: list[object] = []
    handle = SimpleNamespace(update=updates.append)

    def display(obj: object, *, display_id: bool) -> SimpleNamespace:
        shown.append((obj, display_id))
        return handle

    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display", display)
    live = LiveFigure(speedup=2400)
    for n in (1, 2, 3):
        live.show(_samples(n))
    assert len(shown) == 1 and shown[0][1] is True
    assert len(updates) == 2
    assert all(isinstance(image, IPython.display.Image) for image in [shown[0][0], *updates])


def test_outside_a_notebook_nothing_is_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: pytest.fail("displayed"))
    LiveFigure().show(_samples(2))  # no IPython shell in pytest
