"""The architecture diagram, drawn by code so every notebook can highlight its own part.

``draw(highlight="speed")`` returns a matplotlib figure of the whole pipeline with the chosen
layer in colour and the rest greyed out; ``python -m lambda_demo.tutorial.diagram`` writes
``docs/architecture.png`` for the README.
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


def save(path: Path = REPO_ROOT / "docs" / "architecture.png") -> Path:
    """Write the full diagram (used for the README)."""
    import matplotlib

    matplotlib.use("Agg")
    path.parent.mkdir(parents=True, exist_ok=True)
    draw().savefig(path, dpi=120)
    return path


if __name__ == "__main__":
    print(save())
