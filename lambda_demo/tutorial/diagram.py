"""The architecture diagram, drawn by code so every notebook can highlight its own part, and
the mechanism diagrams of the layers (the archive's keys and crash points, the union at D, the
simulated clock).

``draw(highlight="speed")`` returns a matplotlib figure of the whole pipeline with the chosen
layer in colour and the rest greyed out; ``python -m lambda_demo.tutorial.diagram`` writes
``docs/architecture.png`` for the README. `micro_batch_sequence` draws one mechanism: a speed
layer micro-batch with its commit points, and what a crash at each point leads to.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from lambda_demo.settings import REPO_ROOT

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Part = Literal["all", "ingestion", "batch", "speed", "serving"]


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    label: str
    part: str
    colour: str


BOXES = (
    Box(0.0, 2.0, "tweets\n(replay / tweepy)", "ingestion", "#4C72B0"),
    Box(2.2, 2.0, "Kafka\ntopic `tweets`\n+ `tweets.dlq`", "ingestion", "#4C72B0"),
    Box(4.6, 3.3, "S3 master dataset\n(immutable,\nday-partitioned)", "batch", "#DD8452"),
    Box(7.0, 3.3, "warehouse\nraw_tweets ->\nbatch_view (day < D)", "batch", "#DD8452"),
    Box(
        4.6,
        0.7,
        "Spark Structured\nStreaming: dedup,\naggregate, forget\n(25 h watermark)",
        "speed",
        "#55A868",
    ),
    Box(7.0, 0.7, "warehouse\nspeed_view\n(day >= D only)", "speed", "#55A868"),
    Box(9.4, 2.0, "serving_view\nbatch + speed\n-> query / check", "serving", "#8172B3"),
)
ARROWS = (
    (0, 1, "ingestion"),
    (1, 2, "batch"),
    (2, 3, "batch"),
    (1, 4, "speed"),
    (4, 5, "speed"),
    (3, 6, "serving"),
    (5, 6, "serving"),
)
WIDTH, HEIGHT = 1.9, 1.1


def draw(highlight: Part = "all") -> Figure:
    """The pipeline, with ``highlight`` in colour (``"all"`` colours every layer)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(12, 4.2))
    for box in BOXES:
        on = highlight in ("all", box.part)
        ax.add_patch(
            FancyBboxPatch(
                (box.x, box.y),
                WIDTH,
                HEIGHT,
                boxstyle="round,pad=0.05",
                facecolor=box.colour if on else "#E5E5E5",
                edgecolor="black" if on else "#BBBBBB",
                alpha=0.9 if on else 1.0,
            )
        )
        ax.text(
            box.x + WIDTH / 2,
            box.y + HEIGHT / 2,
            box.label,
            ha="center",
            va="center",
            fontsize=9,
            color="white" if on else "#999999",
            fontweight="bold" if on else "normal",
        )
    for start, end, part in ARROWS:
        a, b = BOXES[start], BOXES[end]
        on = highlight in ("all", part)
        ax.add_patch(
            FancyArrowPatch(
                (a.x + WIDTH, a.y + HEIGHT / 2),
                (b.x, b.y + HEIGHT / 2),
                arrowstyle="-|>",
                mutation_scale=15,
                color="black" if on else "#CCCCCC",
                linewidth=1.5,
            )
        )
    for label, y in (
        ("batch layer: all history, recomputed", 4.55),
        ("speed layer: only the days the batch layer has not absorbed yet", 0.35),
    ):
        ax.text(5.8, y, label, ha="center", fontsize=11, style="italic")
    ax.set_xlim(-0.2, 11.5)
    ax.set_ylim(0.1, 4.8)
    ax.axis("off")
    title = "The Lambda Architecture in this repository"
    ax.set_title(title if highlight == "all" else f"{title}: the {highlight} part")
    fig.tight_layout()
    return fig


# --- Mechanism diagrams: how one layer works inside (notebooks 02, 04 and 05) ---------------


def archive_layout(keys: list[str], *, per_level: int = 3) -> Figure:
    """The master dataset's keys as a tree: topic prefix, ingest day, partition, offset range.

    ``keys`` are real object keys (``explore.list_objects``); each level shows its first
    ``per_level`` entries and says how many it leaves out, so the shape stays readable.
    """
    import matplotlib.pyplot as plt

    from lambda_demo.batch.archiver import PREFIX, parse_object_key

    objects = sorted(
        (o.ingest_date.isoformat(), o.partition, o.start, o.end, o.key)
        for o in map(parse_object_key, keys)
        if o is not None
    )
    lines: list[tuple[int, str, str]] = [(0, f"s3://<bucket>/{PREFIX}", "the topic's archive")]
    days = sorted({o[0] for o in objects})
    for day in days[:per_level]:
        lines.append((1, f"ingest_date={day}/", "one prefix per UTC ingest day"))
        partitions = sorted({o[1] for o in objects if o[0] == day})
        for partition in partitions[:per_level]:
            lines.append((2, f"partition={partition}/", "one Kafka partition"))
            ranges = [o for o in objects if o[0] == day and o[1] == partition]
            for _, _, start, end, _ in ranges[:per_level]:
                lines.append(
                    (3, f"offsets-{start:012d}-{end:012d}.jsonl.gz", f"{end - start + 1} records")
                )
            if len(ranges) > per_level:
                lines.append((3, f"... {len(ranges) - per_level} more", ""))
        if len(partitions) > per_level:
            lines.append((2, f"... {len(partitions) - per_level} more partitions", ""))
    if len(days) > per_level:
        lines.append((1, f"... {len(days) - per_level} more days", ""))
    fig, ax = plt.subplots(figsize=(10, 0.28 * len(lines) + 0.8))
    for row, (depth, name, note) in enumerate(lines):
        y = len(lines) - row
        ax.text(depth * 0.6, y, ("└ " if depth else "") + name, fontsize=9, family="monospace")
        ax.text(6.2, y, note, fontsize=9, color="#666666", style="italic")
    ax.set_xlim(0, 9)
    ax.set_ylim(0.3, len(lines) + 0.8)
    ax.axis("off")
    ax.set_title(
        "The master dataset: every object named by what it holds (next run starts at END + 1)"
    )
    fig.tight_layout()
    return fig


BATCH_CRASHES = (
    (
        "archive",
        "Kafka -> S3 objects",
        "after an object is written,\nbefore the offsets are committed",
        "the next run resumes at the\nlast END + 1 found in S3:\nthe same object, same bytes",
    ),
    (
        "load",
        "S3 -> raw_tweets (COPY)",
        "in the middle of an object",
        "rows and the loaded_objects\nmark are one transaction:\nrolled back, loaded again whole",
    ),
    (
        "recompute",
        "raw_tweets -> batch_view",
        "before the new run commits",
        "batch_meta still points at the\nold run: serving reads it;\nthe next run recomputes",
    ),
)
"""(step, what it moves, where a crash can happen, what heals it) for `batch_crashes`."""


def batch_crashes() -> Figure:
    """The batch run's three steps, where a crash can stop each one, and what heals it."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(11, 4.2))
    for index, (step, moves, crash, heal) in enumerate(BATCH_CRASHES):
        x = index * 3.6
        ax.add_patch(
            FancyBboxPatch(
                (x, 2.6), 2.8, 1.0, boxstyle="round,pad=0.05", facecolor="#DD8452", alpha=0.9
            )
        )
        ax.text(
            x + 1.4,
            3.1,
            f"{index + 1}. {step}\n{moves}",
            ha="center",
            va="center",
            color="white",
            fontweight="bold",
            fontsize=9,
        )
        ax.text(
            x + 1.4,
            2.05,
            "⚡ crash " + crash,
            ha="center",
            va="center",
            fontsize=8.5,
            color="#C44E52",
        )
        ax.text(
            x + 1.4,
            0.9,
            heal,
            ha="center",
            va="center",
            fontsize=8.5,
            bbox={"facecolor": "#EAF4EC", "edgecolor": "#55A868"},
        )
        if index < len(BATCH_CRASHES) - 1:
            ax.add_patch(
                FancyArrowPatch(
                    (x + 2.85, 3.1),
                    (x + 3.55, 3.1),
                    arrowstyle="-|>",
                    mutation_scale=15,
                    color="black",
                )
            )
    ax.text(
        5.2,
        0.0,
        "In every case: run the batch again. Nothing is lost, nothing counted twice.",
        ha="center",
        fontsize=10,
        style="italic",
    )
    ax.set_xlim(-0.2, 10.6)
    ax.set_ylim(-0.3, 3.9)
    ax.axis("off")
    ax.set_title("archive -> load -> recompute: where a crash can happen, and what heals it")
    fig.tight_layout()
    return fig


def serving_union(days: list[str], cutoff: str, *, retired: bool = True) -> Figure:
    """The union at D: the published batch run's days < D, the serving deployment's days >= D.

    The speed rows of days before D were absorbed (deleted by the batch run that published
    D); a retired deployment's rows, if any remain, are not read either.
    """
    import matplotlib.pyplot as plt

    position = sorted([*days, cutoff]).index(cutoff)
    rows = [("batch_serving\n(published run)", "#DD8452")]
    rows.append(("speed_serving\n(serving deployment)", "#55A868"))
    if retired:
        rows.append(("retired deployment\n(serving = false)", "#BBBBBB"))
    fig, ax = plt.subplots(figsize=(10, 1.1 * len(rows) + 1.2))
    for index, day in enumerate(days):
        before = index < position
        y = len(rows) - 1
        ax.barh(y, 1, left=index, color="#DD8452" if before else "#F2F2F2", edgecolor="white")
        ax.text(index + 0.5, y, day if before else "", ha="center", va="center", color="white")
        y -= 1
        ax.barh(
            y,
            1,
            left=index,
            color="#F2F2F2" if before else "#55A868",
            edgecolor="white",
            hatch="//" if before else None,
        )
        label = "absorbed:\ndeleted at D" if before else day
        ax.text(
            index + 0.5,
            y,
            label,
            ha="center",
            va="center",
            color="#999999" if before else "white",
            fontsize=8 if before else 10,
        )
        if retired:
            ax.barh(0, 1, left=index, color="#E5E5E5", edgecolor="white")
            ax.text(
                index + 0.5, 0, "not read", ha="center", va="center", color="#999999", fontsize=8
            )
    ax.axvline(position, color="black", linestyle="--")
    ax.text(
        position,
        -0.85,
        f"cutoff D = {cutoff}",
        ha="center",
        bbox={"facecolor": "white", "edgecolor": "none"},
    )
    ax.set_ylim(-1.1, len(rows) - 0.5)
    ax.set_yticks(range(len(rows)), [label for label, _ in reversed(rows)])
    ax.set_xlim(0, len(days))
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title("serving_view = batch_serving UNION ALL speed_serving, summed per location")
    fig.tight_layout()
    return fig


def simulated_clock(
    *, speedup: float, days: int, start: datetime, grace: timedelta | None = None
) -> Figure:
    """Wall-clock seconds against simulated time: where each midnight and batch run falls.

    A replay at ``speedup`` plays one simulated second every 1/``speedup`` wall seconds, so a
    simulated day lasts 86,400 / ``speedup`` seconds of the notebook's run.
    """
    import matplotlib.pyplot as plt

    from lambda_demo.ingestion.clock import format_utc

    seconds_per_day = 86_400 / speedup
    end = days * seconds_per_day
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.plot([0, end], [0, days * 24], color="#4C72B0", linewidth=2)
    for day in range(1, days + 1):
        wall = day * seconds_per_day
        midnight = start + timedelta(days=day)
        ax.axhline(day * 24, color="#BBBBBB", linewidth=0.8)
        ax.axvline(wall, color="#BBBBBB", linewidth=0.8)
        ax.text(
            wall,
            day * 24,
            f"{midnight.date().isoformat()} 00:00 = {wall:.0f} s ",
            fontsize=8,
            ha="right",
            va="bottom",
        )
        if grace is not None and day < days:
            ran = wall + grace.total_seconds() / speedup
            ax.axvline(ran, color="black", linestyle="--", linewidth=1)
            ax.text(
                ran,
                2,
                f" batch run, D = {midnight.date().isoformat()}",
                rotation=90,
                fontsize=8,
                va="bottom",
            )
    ax.set_xlabel(f"wall-clock seconds (speedup {speedup:,.0f}: a day = {seconds_per_day:.0f} s)")
    ax.set_ylabel(f"simulated hours after {format_utc(start)[:16]}")
    ax.set_xlim(0, end * 1.02)
    ax.set_ylim(0, days * 24 + 2)
    ax.set_title("Wall clock vs simulated clock: the replay runs the stream's own time faster")
    fig.tight_layout()
    return fig


# --- The speed layer's micro-batch (notebook 03) ---------------------------------------------


#: One micro-batch, in order: (where it writes, what it does, its colour).
MICRO_BATCH_STEPS = (
    (
        "checkpoint: offsets log",
        "1. plan\nwrite offsets/N:\nthe Kafka offsets\nbatch N will read",
        "#4C72B0",
    ),
    (
        "Spark; state store",
        "2. process\nread those records,\nvalidate, dedup;\naggregate the new",
        "#55A868",
    ),
    (
        "warehouse",
        "3. sink: ONE transaction\nadd the new sums\n+ claim batch_id = N\nin speed_deployments",
        "#8172B3",
    ),
    ("checkpoint: commit log", "4. commit\nwrite commits/N:\nbatch N is done", "#4C72B0"),
)
#: Where a crash can happen, in step widths from the left, and what the restarted query does.
CRASH_POINTS = (
    (0.5, "A", "before offsets/N is\nwritten: batch N is\nplanned again, from\nthe last commit"),
    (
        2.0,
        "B",
        "offsets/N written, the\nwarehouse not: batch N\nre-runs on the same\noffsets and state",
    ),
    (
        3.0,
        "C",
        "warehouse committed,\ncommits/N not: batch N\nre-runs; the sink sees\nN claimed and skips",
    ),
    (4.0, "D", "batch N complete: the\nnext plans from where\noffsets/N ended"),
)


def micro_batch_sequence() -> Figure:
    """One speed-layer micro-batch, its commit points, and a restart after a crash at each.

    Spark's checkpoint holds two logs: ``offsets/N``, written before batch N runs, and
    ``commits/N``, written after its sink returned. The sink's own commit sits in between, in
    the warehouse, claiming batch N by id in the same transaction as the rows. So a crash
    anywhere leads to a re-run of batch N on the same offsets, and no batch is written twice.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(12, 5.2))
    width, height, gap, top = 2.3, 1.5, 0.7, 2.6
    for index, (place, label, colour) in enumerate(MICRO_BATCH_STEPS):
        x = index * (width + gap)
        ax.add_patch(
            FancyBboxPatch(
                (x, top),
                width,
                height,
                boxstyle="round,pad=0.05",
                facecolor=colour,
                edgecolor="black",
                alpha=0.9,
            )
        )
        ax.text(
            x + width / 2,
            top + height / 2,
            label,
            ha="center",
            va="center",
            fontsize=9,
            color="white",
            fontweight="bold",
        )
        ax.text(
            x + width / 2,
            top + height + 0.2,
            f"writes to: {place}",
            ha="center",
            fontsize=9,
            style="italic",
        )
        if index + 1 < len(MICRO_BATCH_STEPS):
            ax.add_patch(
                FancyArrowPatch(
                    (x + width + 0.05, top + height / 2),
                    (x + width + gap - 0.05, top + height / 2),
                    arrowstyle="-|>",
                    mutation_scale=15,
                    color="black",
                    linewidth=1.5,
                )
            )
    for position, name, outcome in CRASH_POINTS:
        steps, fraction = divmod(position, 1)
        x = steps * (width + gap) + (width * fraction if fraction else -gap / 2)
        if position >= len(MICRO_BATCH_STEPS):
            x = (len(MICRO_BATCH_STEPS) - 1) * (width + gap) + width + 0.3
        ax.plot([x, x], [top - 0.1, top - 0.5], color="#C44E52", linewidth=2)
        ax.text(
            x,
            top - 0.7,
            f"crash {name}",
            ha="center",
            va="center",
            fontsize=10,
            color="#C44E52",
            fontweight="bold",
        )
        ax.text(x, top - 1.55, outcome, ha="center", va="center", fontsize=8.5)
    ax.text(
        -0.1,
        0.05,
        "A re-run reads the same offsets (offsets/N) from the same state, so it computes the "
        "same sums;\nthe warehouse claim makes the write happen once, whatever "
        "Spark re-runs. Exactly once = replayable input + deterministic batch + idempotent sink.",
        fontsize=9,
        va="bottom",
    )
    ax.set_xlim(-0.2, len(MICRO_BATCH_STEPS) * (width + gap))
    ax.set_ylim(0, top + height + 0.6)
    ax.axis("off")
    ax.set_title("A speed-layer micro-batch N: its commit points, and a crash at each")
    fig.tight_layout()
    return fig


def save(path: Path = REPO_ROOT / "docs" / "architecture.png") -> Path:
    """Write the full diagram (used for the README)."""
    import matplotlib

    matplotlib.use("Agg")
    path.parent.mkdir(parents=True, exist_ok=True)
    draw().savefig(path, dpi=120)
    return path


if __name__ == "__main__":
    print(save())
