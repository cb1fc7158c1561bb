"""The live serving view: one figure, redrawn in place while a replay runs.

A streaming pipeline is easier to believe when you watch it. While a replay plays into Kafka,
`watch` samples the pipeline every couple of seconds and redraws one figure in the notebook
(one output, updated in place, not a new picture per sample):

* the serving view's total, split into the part the batch view serves and the part the speed
  view serves: at a batch run the batch part takes a finished day over from the speed part;
* the simulated clock;
* how far the serving view is behind Kafka, honestly: **records behind** (Kafka's end
  offsets minus what the speed layer has committed) and **seconds behind** (the stream's now
  minus the ingest time of the newest record the serving view reflects), both from
  `lambda_demo.status.serving_lag`, the figures ``lambda-demo status`` prints. Seconds are
  given twice: in simulated seconds, the stream's own time, and in wall seconds (simulated
  seconds divided by the speed-up), what a reader of the view would wait at real speed.

Usage in a notebook::

    with ThreadPoolExecutor(max_workers=1) as pool:
        work = pool.submit(replay, files, settings=settings, speedup=2880, clock=clock)
        samples = watch(work, settings, clock=clock)   # redraws until the replay is done

``samples`` is a DataFrame, one row per sample, to plot or check afterwards. Outside a
notebook (a test, the CLI) nothing is displayed and the samples are still returned.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping
from concurrent.futures import Future, wait
from typing import TYPE_CHECKING, Any

from lambda_demo.ingestion.clock import SimulatedClock, format_utc
from lambda_demo.serving import reads
from lambda_demo.settings import Settings
from lambda_demo.status import serving_lag

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

BATCH_COLOUR = "#DD8452"
SPEED_COLOUR = "#55A868"


def serving_sample(
    settings: Settings, *, clock: SimulatedClock | None = None, started: float
) -> dict[str, Any]:
    """One sample of the serving view: the clock, the two parts and the lag.

    ``started`` is the ``time.monotonic()`` the run began at. Without a ``clock`` (a live
    stream) the stream's own now stands in for it, and its seconds are wall seconds.
    """
    lag = serving_lag(settings)  # Kafka first, then the warehouse
    parts = reads.totals(settings)
    speedup = clock.speedup if clock is not None else 1.0
    now = clock.now if clock is not None else lag.now
    return {
        "wall_seconds": round(time.monotonic() - started, 1),
        "simulated_time": now,
        "batch_tweets": int(parts.loc["batch", "tweet_count"]),
        "speed_tweets": int(parts.loc["speed", "tweet_count"]),
        "cutoff": reads.batch_cutoff(settings),
        "lag_records": lag.records,
        "lag_simulated_seconds": lag.seconds,
        # speed-up 0 plays as fast as possible: no wall-clock equivalent.
        "lag_wall_seconds": (
            round(lag.seconds / speedup, 3) if lag.seconds is not None and speedup else None
        ),
    }


def live_figure(samples: pd.DataFrame, *, speedup: float | None = None) -> Figure:
    """The samples drawn: serving totals by layer, records behind, seconds behind.

    A plain matplotlib ``Figure``, not one of pyplot's: the notebook's inline backend shows
    pyplot's figures again at the end of a cell, and this one is shown once, by `LiveFigure`.
    ``speedup`` adds a wall-seconds scale to the seconds panel.
    """
    import pandas as pd
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 6.5), dpi=90, layout="constrained")
    parts_ax, records_ax, seconds_ax = fig.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1, 1]}
    )
    drawn = samples.dropna(subset=["simulated_time"])
    if drawn.empty:
        fig.suptitle("waiting for the first record...")
        return fig
    at = pd.to_datetime(drawn["simulated_time"], utc=True)
    parts_ax.stackplot(
        at,
        drawn["batch_tweets"],
        drawn["speed_tweets"],
        labels=["batch part (days before the cutoff)", "speed part (days from the cutoff)"],
        colors=[BATCH_COLOUR, SPEED_COLOUR],
    )
    parts_ax.set_ylabel("tweets served")
    parts_ax.legend(loc="upper left")
    # A batch run shows as a new cutoff: the first sample that reads it.
    published = drawn["cutoff"].ne(drawn["cutoff"].shift()) & drawn["cutoff"].notna()
    published.iloc[0] = False  # a cutoff already there when the watch began
    for moment, cutoff in zip(at[published], drawn["cutoff"][published], strict=True):
        for ax in (parts_ax, records_ax, seconds_ax):
            ax.axvline(moment, color="black", linestyle="--", linewidth=1)
        parts_ax.annotate(
            f" batch run: D = {cutoff}", (moment, 0.95), xycoords=("data", "axes fraction")
        )
    records_ax.step(at, drawn["lag_records"], where="post", color="#4C72B0")
    records_ax.set_ylabel("records behind\n(Kafka offsets)")
    records_ax.set_ylim(bottom=0)
    seconds_ax.step(at, drawn["lag_simulated_seconds"].astype(float), where="post", color="#C44E52")
    seconds_ax.set_ylabel("seconds behind\n(simulated)")
    seconds_ax.set_ylim(bottom=0)
    seconds_ax.set_xlabel("simulated time (UTC)")
    if speedup:
        wall = seconds_ax.secondary_yaxis(
            "right", functions=(lambda s: s / speedup, lambda w: w * speedup)
        )
        wall.set_ylabel("wall seconds")
    fig.suptitle(_headline(drawn.iloc[-1]))
    return fig


def _headline(last: Mapping[str, Any]) -> str:
    """The newest sample in words, above the figure: the clock, the parts, the lag."""
    import pandas as pd

    total = last["batch_tweets"] + last["speed_tweets"]
    clock = format_utc(pd.Timestamp(last["simulated_time"]).to_pydatetime())
    behind = f"{last['lag_records']:,} records"
    if pd.notna(last["lag_simulated_seconds"]):
        behind += f", {last['lag_simulated_seconds']:,.0f} s simulated"
    if pd.notna(last["lag_wall_seconds"]):
        behind += f" ({last['lag_wall_seconds']:,.1f} s wall)"
    return (
        f"simulated clock {clock[:10]} {clock[11:16]} UTC: {total:,} tweets served "
        f"({last['batch_tweets']:,} batch + {last['speed_tweets']:,} speed)\n"
        f"behind Kafka: {behind}"
    )


class LiveFigure:
    """One notebook output, redrawn in place with each `show`.

    The figure goes out as a PNG under one IPython display id, and each `show` updates that
    output: a notebook, saved or executed headless (nbconvert, nbmake), keeps one picture,
    the last. Outside IPython, `show` does nothing.
    """

    def __init__(self, *, speedup: float | None = None) -> None:
        self.speedup = speedup
        self._handle: Any = None

    def show(self, samples: pd.DataFrame) -> None:
        from IPython import get_ipython
        from IPython.display import Image, display

        if get_ipython() is None:
            return
        png = io.BytesIO()
        live_figure(samples, speedup=self.speedup).savefig(png, format="png")
        image = Image(data=png.getvalue(), format="png")
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)


def watch(
    work: Future,
    settings: Settings,
    *,
    clock: SimulatedClock | None = None,
    every_seconds: float = 2.0,
) -> pd.DataFrame:
    """Sample every ``every_seconds`` and redraw the live figure until ``work`` is done.

    The last sample is taken after ``work`` finished, so a ``work`` that ends by letting the
    speed layer catch up (and stopping it, which records its last progress) ends the figure on
    its final lag. ``work``'s own error is raised here. Returns the samples, one row each.
    """
    import pandas as pd

    started = time.monotonic()
    live = LiveFigure(speedup=clock.speedup if clock is not None else None)
    samples: list[dict[str, Any]] = []
    while True:
        finished = work.done()  # before sampling: the last sample sees the finished work
        next_at = time.monotonic() + every_seconds
        samples.append(serving_sample(settings, clock=clock, started=started))
        live.show(pd.DataFrame(samples))
        if finished:
            break
        wait([work], timeout=max(0.0, next_at - time.monotonic()))  # or until the work ends
    work.result()
    return pd.DataFrame(samples)
