"""``lambda-demo demo``: the whole Lambda loop over the sample's simulated days.

1. bring the embedded stack up (other profiles: the services must already run);
2. start the speed layer (its streaming query, 2 s trigger) in this process;
3. replay the sample in a background thread on a simulated clock, ``speedup`` times faster
   than real time (`DEMO_SPEEDUP`), so three days pass in under a minute;
4. each time the simulated clock passes midnight, run the batch layer with that day as the
   cutoff: the batch view absorbs yesterday, and the speed layer forgets it - the hand-over
   a learner should watch (the timeline records the serving view's two parts, its lag, and
   the speed layer's state rows and days; ``live=True`` draws it as it goes, in a notebook);
5. let the speed layer catch up, print the top of the serving view, and run ``check``.

Re-running is safe: the replay resumes (Kafka already has everything), the batch run is
idempotent, and the speed layer continues from its checkpoint.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from lambda_demo.batch.run import BatchSummary, run_batch
from lambda_demo.clients import warehouse
from lambda_demo.contract import ingest_day_of
from lambda_demo.ingestion.clock import SimulatedClock
from lambda_demo.ingestion.handler import IngestCounts
from lambda_demo.ingestion.replay import replay
from lambda_demo.serving import reads
from lambda_demo.serving.check import CheckResult, check
from lambda_demo.settings import STACK_PROFILES, Settings, get_settings
from lambda_demo.status import speed_figures
from lambda_demo.tutorial.live_view import LiveFigure, serving_sample

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

# A batch run starts this long (simulated) after midnight, so the records sent just before
# midnight have surely reached Kafka: a real batch job also waits for stragglers.
BATCH_GRACE = timedelta(minutes=15)

DEMO_SPEEDUP = 10800.0
"""Simulated seconds per wall second: a simulated day passes in 8 s, so the sample's three
days replay in 24 s, and a 2 s micro-batch covers six simulated hours."""


@dataclass
class DemoResult:
    """What happened: the replay's counts, each batch run, a timeline, and the final check."""

    counts: IngestCounts
    batches: list[BatchSummary]
    timeline: pd.DataFrame
    check: CheckResult
    seconds: float
    top: pd.DataFrame = field(repr=False)


def _sample(
    timeline: list[dict], clock: SimulatedClock, started: float, settings: Settings
) -> None:
    """One timeline row: the live view's sample (the serving view's two parts and its lag),
    and how much the speed layer holds (Spark state rows, days in the speed view)."""
    row = serving_sample(settings, clock=clock, started=started)
    held = speed_figures(settings)
    timeline.append(
        {**row, "speed_state_rows": held["state_rows"], "speed_days": len(held["days"])}
    )


def run_demo(
    settings: Settings | None = None,
    *,
    speedup: float = DEMO_SPEEDUP,
    files: list[Path] | None = None,
    progress: bool = True,
    sample_every_seconds: float = 2.0,
    live: bool = False,
) -> DemoResult:
    """Run the loop and return what happened (the CLI prints it; notebook 05 plots it).

    ``live`` redraws the timeline as a `live_view.LiveFigure` at each sample (in a notebook).
    """
    import pandas as pd

    settings = settings or get_settings()
    started = time.monotonic()
    if settings.profile in STACK_PROFILES:
        from lambda_demo import stack
        from lambda_demo.speed.run import await_first_batch, start_queries, stop_queries

        stack.up(settings)
    warehouse.ensure_schema(settings)
    say = tqdm.write if progress else logger.info
    say("starting the speed layer (Spark Structured Streaming)...")
    queries = start_queries(settings)
    await_first_batch(queries)  # warm before the clock starts: fresh from the first tweet
    clock = SimulatedClock(speedup=speedup)
    outcome: dict[str, object] = {}

    def play() -> None:
        try:
            outcome["counts"] = replay(
                files, settings=settings, speedup=speedup, progress=progress, clock=clock
            )
        except BaseException as exc:  # surfaced in the main thread below
            outcome["error"] = exc

    player = threading.Thread(target=play, name="replay", daemon=True)
    batches: list[BatchSummary] = []
    timeline: list[dict] = []
    figure = LiveFigure(speedup=speedup) if live else None

    def sample() -> None:
        _sample(timeline, clock, started, settings)
        if figure is not None:
            figure.show(pd.DataFrame(timeline))

    covered: date | None = None  # the day the batch view covers up to (exclusive)

    def batch_if_new_day(now: datetime | None) -> None:
        nonlocal covered
        if now is None:
            return
        if covered is None:
            # The replay's first day has nothing to absorb yet, nor has any day before a
            # cutoff already published (a re-run: a cutoff never moves back).
            published = reads.batch_cutoff(settings)
            covered = max(
                ingest_day_of(now),
                date.fromisoformat(published) if published else date.min,
            )
            return
        day = ingest_day_of(now - BATCH_GRACE)
        if day > covered:
            say(f"simulated midnight -> batch run with cutoff {day}")
            batches.append(run_batch(settings, cutoff=day, progress=False))
            covered = day

    try:
        player.start()
        next_sample = 0.0
        while player.is_alive():
            player.join(timeout=0.5)
            batch_if_new_day(clock.now)
            if time.monotonic() >= next_sample:
                sample()
                next_sample = time.monotonic() + sample_every_seconds
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        batch_if_new_day(clock.now + BATCH_GRACE if clock.now else None)
        say("replay finished; letting the speed layer catch up...")
        for query in queries:
            query.processAllAvailable()
    finally:
        stop_queries(queries, settings)
    sample()  # after stop_queries recorded the last progress: the final lag
    result = check(settings)
    top = reads.top(10, settings=settings)
    seconds = time.monotonic() - started
    if progress:
        print("\nTop 10 locations in the serving view (batch + speed):")
        print(top.to_string(index=False))
        print(f"\n{result}\ndemo finished in {seconds:.0f} s")
    return DemoResult(
        counts=outcome["counts"],  # type: ignore[arg-type]
        batches=batches,
        timeline=pd.DataFrame(timeline),
        check=result,
        seconds=seconds,
        top=top,
    )
