"""Fault tolerance, machine and human: break a running pipeline and watch it heal, heal a bad
speed layer, rebuild a warehouse (and, for notebook 07, the two ways to recompute a view).

Notebook 06 uses these to show the Lambda Architecture's strongest promise: the master
dataset is immutable, so any view - however wrong a deployed bug made it - can be recomputed.
Before that, `BreakAndHeal` stops the speed layer and the broker in the middle of a replay,
for real, one step per cell, and shows that the serving view is still exact afterwards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg2 import sql as psql

from lambda_demo import stack, view
from lambda_demo.batch.loader import load
from lambda_demo.batch.recompute import recompute
from lambda_demo.clients import storage, warehouse
from lambda_demo.contract import FlatTweet, parse_api_tweet
from lambda_demo.errors import LambdaDemoError
from lambda_demo.ingestion.clock import SimulatedClock, format_utc, wait_until
from lambda_demo.ingestion.handler import IngestCounts
from lambda_demo.ingestion.replay import read_lines, replay
from lambda_demo.serving import reads
from lambda_demo.serving.check import check
from lambda_demo.settings import Settings
from lambda_demo.speed.run import await_first_batch, run_speed, start_queries, stop_queries
from lambda_demo.status import status

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure
    from pyspark.sql import DataFrame
    from pyspark.sql.streaming import StreamingQuery


# --- Break it, watch it heal ------------------------------------------------------------------

STEP_TIMEOUT_SECONDS = 300.0
"""How long a step waits for the state it promises before it gives up in words."""


def valid_tweets_in(path: Path) -> int:
    """Distinct valid tweets in a replay file, judged by the contract alone.

    This is what an exact serving view must count, whatever happened on the way: the number
    comes from the file, not from Kafka or any layer, so a lost or doubled record shows.
    """
    ids = {
        parsed.tweet_id
        for line in read_lines(path)
        if isinstance(parsed := parse_api_tweet(line), FlatTweet)
    }
    return len(ids)


@dataclass
class BreakAndHeal:
    """Stop the speed layer and the broker in the middle of a replay, restart them, and show
    that the serving view is still exact, one method per notebook cell.

    Every step returns a snapshot of the pipeline (`snapshot`), read from the layers that own
    each figure (`lambda_demo.status`), so what a learner sees is observable state, not what
    the code believes; `timeline` puts them side by side.
    """

    settings: Settings
    sample: Path
    speedup: float
    clock: SimulatedClock = field(init=False)
    queries: list[StreamingQuery] = field(default_factory=list, init=False)
    snapshots: list[dict[str, Any]] = field(default_factory=list, init=False)
    _replay: BackgroundReplay | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.clock = SimulatedClock(speedup=self.speedup)

    @classmethod
    def prepare(
        cls, settings: Settings, *, tweets: int = 3000, speedup: float = 2880.0, seed: int = 18
    ) -> BreakAndHeal:
        """An emptied namespace and a one-day sample that ``speedup`` plays in 86,400 /
        ``speedup`` seconds (30 s by default): long enough to break things while it runs.
        """
        from lambda_demo.ingestion.sample import DEFAULT_START
        from lambda_demo.tutorial.explore import reset_namespace, sample_file

        stack.up(settings)
        reset_namespace(settings)
        sample = sample_file(
            f"heal-{tweets}-{seed}.jsonl.gz",
            tweets=tweets,
            days=1,
            seed=seed,
            start=DEFAULT_START,
            settings=settings,
        )
        return cls(settings=settings, sample=sample, speedup=speedup)

    def snapshot(self, step: str) -> dict[str, Any]:
        """Where the data is now: the replay's clock, Kafka, the speed layer's lag, serving.

        With the broker down, ``status`` cannot read Kafka: the snapshot keeps its message,
        which is what an operator would read too.
        """
        row: dict[str, Any] = {
            "step": step,
            "simulated time": format_utc(self.clock.now)[:16] if self.clock.now else None,
            "replay": "running" if self._replay and self._replay.running else "not running",
            "speed layer": "running" if any(q.isActive for q in self.queries) else "stopped",
        }
        try:
            figures = status(self.settings)
        except LambdaDemoError as exc:
            row["status says"] = str(exc)
        else:
            row["records in Kafka"] = figures["kafka"]["records"]
            row["lag_records"] = figures["speed"]["lag_records"]
            row["serving tweets"] = figures["serving"]["tweets"]
        self.snapshots.append(row)
        return row

    def timeline(self) -> pd.DataFrame:
        """Every snapshot so far, one row per step."""
        import pandas as pd

        frame = pd.DataFrame(self.snapshots).set_index("step")
        counts = ["records in Kafka", "lag_records", "serving tweets"]
        frame[counts] = frame[counts].astype("Int64")  # whole numbers; <NA> while Kafka is down
        return frame.fillna({"simulated time": "", "status says": ""})

    def start_speed_layer(self) -> dict[str, Any]:
        """Start the speed layer on the still-empty topic and wait for its first micro-batch,
        so Spark is warm before the first tweet arrives."""
        self.queries = start_queries(self.settings)
        await_first_batch(self.queries)
        return self.snapshot("speed layer started")

    def start_replay(self) -> dict[str, Any]:
        """Play the sample into Kafka from a background thread, paced by the simulated clock."""
        self._replay = BackgroundReplay.start(self.settings, self.sample, self.speedup, self.clock)
        return self.snapshot("replay started")

    def await_serving(self, tweets: int) -> dict[str, Any]:
        """Wait until the serving view counts ``tweets`` and the speed layer has reported
        processing records (its progress reaches the warehouse just after its rows, and
        ``lag_records`` is computed from it)."""
        self._await(
            lambda figures: (
                figures["serving"]["tweets"] >= tweets
                and figures["speed"]["lag_records"] < figures["kafka"]["records"]
            ),
            f"the serving view to count {tweets} tweets",
        )
        return self.snapshot("speed layer keeping up")

    def stop_speed_layer(self) -> dict[str, Any]:
        """Stop the speed layer mid-replay, as an operator (or a redeploy) would."""
        stop_queries(self.queries, self.settings)
        return self.snapshot("speed layer stopped")

    def await_backlog(self, records: int) -> dict[str, Any]:
        """Wait until ``records`` records wait in Kafka behind the stopped speed layer."""
        self._await(
            lambda figures: figures["speed"]["lag_records"] >= records,
            f"{records} records to pile up behind the speed layer",
        )
        return self.snapshot("records pile up")

    def stop_broker(self) -> dict[str, Any]:
        """Stop Kafka while the replay still produces (``stack.stop_service``)."""
        stack.stop_service("kafka", self.settings)
        return self.snapshot("broker stopped")

    def start_broker(self) -> dict[str, Any]:
        """``stack.up``: Kafka comes back on its recorded ports, with its data."""
        stack.up(self.settings)
        return self.snapshot("broker started")

    def finish_replay(self) -> dict[str, Any]:
        """Wait for the replay to end; return what it did (``failed``: sends it gave up on)."""
        if self._replay is None:
            raise LambdaDemoError("Start the replay first (start_replay).")
        counts = self._replay.result()
        self.snapshot("replay finished")
        return counts

    def resume_replay(self) -> dict[str, Any]:
        """Replay the same file again: it sends exactly the lines Kafka lacks (often none)."""
        counts = replay([self.sample], settings=self.settings, progress=False)
        self.snapshot("replay resumed")
        return replay_counts(counts)

    def restart_speed_layer(self) -> dict[str, Any]:
        """Start the speed layer again from its checkpoint; wait until it has caught up."""
        self.queries = start_queries(self.settings)

        def caught_up(figures: dict[str, Any]) -> bool:
            for query in self.queries:
                if not query.isActive:
                    raise query.exception() or LambdaDemoError(f"{query.name} stopped")
            return figures["speed"]["lag_records"] == 0

        self._await(caught_up, "the speed layer to catch up")
        return self.snapshot("speed layer caught up")

    def verify(self) -> dict[str, Any]:
        """Stop the speed layer, then compare the serving view with Kafka and with the file."""
        stop_queries(self.queries, self.settings)
        result = check(self.settings)
        row = self.snapshot("speed layer stopped, check")
        return {
            "check": str(result).splitlines()[0],
            "serving tweets": row["serving tweets"],
            "valid tweets in the file": valid_tweets_in(self.sample),
        }

    def _await(self, done: Callable[[dict[str, Any]], bool], what: str) -> None:
        """Poll ``status`` until ``done(figures)`` holds (observable state, never a sleep)."""
        wait_until(
            lambda: done(status(self.settings)),
            STEP_TIMEOUT_SECONDS,
            what,
            hint="`lambda-demo status` shows where the data is.",
        )


def replay_counts(counts: IngestCounts) -> dict[str, int]:
    """A replay's counts, with the failed sends ``as_dict`` leaves out."""
    return {**counts.as_dict(), "failed": counts.failed}


@dataclass
class BackgroundReplay:
    """The real `replay` in a thread of its own, so a lesson can break things while it runs;
    its error, if any, is raised in the caller's thread by `result`."""

    thread: threading.Thread
    _outcome: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(
        cls, settings: Settings, sample: Path, speedup: float, clock: SimulatedClock
    ) -> BackgroundReplay:
        """Start playing ``sample`` at ``speedup``, paced by ``clock``."""
        outcome: dict[str, Any] = {}

        def play() -> None:
            try:
                outcome["counts"] = replay(
                    [sample], settings=settings, speedup=speedup, progress=False, clock=clock
                )
            except BaseException as exc:  # raised in the caller's thread by result()
                outcome["error"] = exc

        background = cls(threading.Thread(target=play, name="replay", daemon=True), outcome)
        background.thread.start()
        return background

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def result(self) -> dict[str, int]:
        """Wait for the replay to end; what it did (``failed``: sends it gave up on)."""
        self.thread.join()
        if "error" in self._outcome:
            raise self._outcome["error"]
        return replay_counts(self._outcome["counts"])


def buggy_deduplicate(tweets: DataFrame) -> DataFrame:
    """A plausible bug: the developer "simplified" the query and dropped the deduplication.

    Every duplicate delivery is now counted: the speed view over-counts.
    """
    return tweets


def fresh_workspace(settings: Settings, *, schema: str) -> Settings:
    """Settings for an empty warehouse schema with its own checkpoints (dropped if present).

    Recovery experiments start from nothing each time, so re-running a notebook tells the
    same story: a query restarted from an old checkpoint would have nothing new to process.
    """
    target = settings.model_copy(
        update={
            "warehouse_schema": schema,
            "checkpoint_location": f"{settings.checkpoints}/workspace-{schema}",
        }
    )
    conn = warehouse.connect(target)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                psql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psql.Identifier(schema))
            )
    finally:
        conn.close()
    storage.delete_checkpoints(target.checkpoints, target)
    warehouse.ensure_schema(target)
    return target


def deploy_buggy_speed_layer(settings: Settings) -> None:
    """Run the buggy query once, on its own checkpoint, into the real ``speed_view``."""
    run_speed(
        settings, once=True, deduplicate=buggy_deduplicate, checkpoint_name="speed_view_buggy"
    )


def deploy_fixed_speed_layer(settings: Settings, *, version: int = 2) -> None:
    """The fix, deployed as a new query: a new checkpoint is a new deployment, which rebuilds
    the speed view from Kafka and, once caught up, replaces every row of the buggy one."""
    run_speed(settings, once=True, checkpoint_name=f"speed_view_v{version}")


@dataclass(frozen=True)
class Recomputation:
    """A view recomputed into a fresh warehouse schema, and how long it took."""

    how: str
    schema: str
    seconds: float
    view: pd.DataFrame


def rebuild_from_master_dataset(settings: Settings, *, schema: str, cutoff: date) -> Recomputation:
    """Lambda: load the S3 master dataset into an empty warehouse and recompute the view."""
    target = fresh_workspace(settings, schema=schema)
    started = time.perf_counter()
    load(target, progress=False)
    recompute(target, cutoff=cutoff)
    seconds = time.perf_counter() - started
    return Recomputation("batch: S3 -> warehouse -> SQL", schema, seconds, _batch_view(target))


def reprocess_from_kafka(settings: Settings, *, schema: str) -> Recomputation:
    """Kappa: no batch layer; replay the whole topic through the streaming code from offset 0."""
    target = fresh_workspace(settings, schema=schema)
    started = time.perf_counter()
    run_speed(target, once=True)
    seconds = time.perf_counter() - started
    return Recomputation("stream: Kafka -> Spark", schema, seconds, reads.serving_view(target))


def _batch_view(settings: Settings) -> pd.DataFrame:
    """The current batch view only (no speed part), in the serving view's layout."""
    frame = warehouse.fetch_frame(
        f"SELECT {', '.join(view.COLUMNS)} FROM batch_serving ORDER BY location",
        settings=settings,
    )
    return frame.astype({name: "int64" for name in view.MEASURE_NAMES})


def overcount_figure(mismatches: pd.DataFrame, *, top: int = 12) -> Figure:
    """Bar chart of the tweets a buggy view over-counts, per location (from ``check``)."""
    import matplotlib.pyplot as plt

    extra = (mismatches["tweet_count_serving"] - mismatches["tweet_count_expected"]).rename(
        "extra tweets"
    )
    worst = mismatches.assign(extra=extra).nlargest(top, "extra")
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.barh(worst["location"].str.slice(0, 30)[::-1], worst["extra"][::-1], color="#C44E52")
    ax.set_xlabel("tweets counted more than once")
    ax.set_title(
        f"What the bug did: {int(extra.sum())} extra tweets over {len(mismatches)} locations"
    )
    fig.tight_layout()
    return fig
