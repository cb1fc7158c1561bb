"""The architecture diagram, drawn by code so every notebook can highlight its own part.

``draw(highlight="speed")`` returns a matplotlib figure of the whole pipeline with the chosen
layer in colour and the rest greyed out; ``python -m lambda_demo.tutorial.diagram`` writes
``docs/architecture.png`` for the README. `micro_batch_sequence` draws one mechanism: a speed
layer micro-batch with its commit points, and what a crash at each point leads to.
"""

from __future__ import annotations

from dataclasses import dataclass
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


#: One micro-batch, in order: (where it writes, what it does, its colour).
MICRO_BATCH_STEPS = (
    (
        "checkpoint: offsets log",
        "1. plan\nwrite offsets/N:\nthe Kafka offsets\nbatch N will read",
        "#4C72B0",
    ),
    (
        "Spark; state store",
        "2. process\nread those records,\nvalidate, dedup,\naggregate",
        "#55A868",
    ),
    (
        "warehouse",
        "3. sink: ONE transaction\nupsert absolute totals\n+ claim batch_id = N\n"
        "in speed_deployments",
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
        "same absolute totals;\nthe warehouse claim makes the write happen once, whatever "
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
