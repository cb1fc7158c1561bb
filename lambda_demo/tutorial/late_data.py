"""Late data, scripted: nine deliveries with chosen ingest times, played one step at a time.

Late data is best taught on a stream you chose, not a random one (the *Streaming Systems*
book's way): a handful of records, each with a chosen **event time** and a chosen **arrival**,
replayed identically on every run. In this pipeline the speed layer's event time *is* the
ingest time, the Kafka timestamp every layer keys days on (``contract.INGEST_DAY_ZONE``), and a
record's arrival is the micro-batch that processes it. `SCRIPT` holds the deliveries; `play`

1. empties the lesson's namespace (``explore.reset_namespace``), so every run starts alike;
2. for each step, sends that step's deliveries through the real ``TweetHandler`` (X API JSON
   in, the contract's flat record out, keyed by tweet id) with their chosen Kafka timestamps,
   then runs the real speed layer with the ``availableNow`` trigger: exactly the records of
   the step, in one micro-batch, after which Spark moves the watermark. Between two steps the
   watermark is therefore always the same: 25 hours behind the newest ingest time sent so far;
3. runs the real batch layer with a cutoff past every day of the script;

and reports what became of each delivery, **read from what the layers did**, not from the
script: whether the speed view's row for the delivery's day and location gained it during its
step, what Spark's progress report of that step says (its watermark, the rows it dropped as
later than the watermark, the duplicates it dropped), and whether the batch view counts it.
Each tweet of the script has a location of its own, and a re-sent tweet carries a different
like count (likes grow between deliveries), so each delivery is visible in the views.

**Why a one-partition topic.** Each Kafka partition has a watermark of its own and the query's
watermark is the minimum of them (``speed.stream``); a partition that has received nothing
counts as being at time zero. With several partitions, the watermark would stay at zero until
the handler's keying had put a delivery into every partition, which nine records need not do.
One partition makes the query's watermark simply that of the stream.

``late_data_figure`` draws the result: arrival step against ingest time, the watermark as a
step line, midnights, and each delivery coloured by its fate. Nothing in the frame or the
figure depends on the wall clock, so both are identical on every run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from lambda_demo.batch.run import run_batch
from lambda_demo.clients import kafka_io, warehouse
from lambda_demo.contract import ingest_day_of
from lambda_demo.errors import LambdaDemoError
from lambda_demo.ingestion.clock import format_utc, to_millis
from lambda_demo.ingestion.handler import TweetHandler
from lambda_demo.settings import Settings
from lambda_demo.speed.run import run_speed
from lambda_demo.speed.sink import NO_WATERMARK
from lambda_demo.tutorial.explore import reset_namespace

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class ScriptedRecord:
    """One delivery: which tweet, from where, stamped when by Kafka, sent at which step.

    ``likes`` is the tweet's like count at this delivery: a tweet re-sent later has gained
    likes, which tells in the views which of its deliveries was counted.
    """

    name: str
    tweet_id: str
    location: str
    ingest_time: datetime
    step: int
    likes: int


def _nov(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


SCRIPT: tuple[ScriptedRecord, ...] = (
    ScriptedRecord("on time", "101", "Lisboa", _nov(1, 9), step=1, likes=2),
    ScriptedRecord("just before midnight", "102", "Paris", _nov(1, 23, 58), step=1, likes=3),
    # The stream reconnects and re-sends what it was sending: same tweet, five minutes later.
    ScriptedRecord("duplicate after midnight", "102", "Paris", _nov(2, 0, 3), step=2, likes=5),
    ScriptedRecord("next morning", "103", "Berlin", _nov(2, 8), step=2, likes=1),
    # A collector that lost its connection delivers what it stamped at 18:00 the day before.
    ScriptedRecord("late, within the watermark", "104", "Madrid", _nov(1, 18), step=3, likes=4),
    ScriptedRecord("the night after", "105", "Tokyo", _nov(3, 2), step=3, likes=1),
    # The same collector, later still: the watermark has passed its time (and its day's end).
    ScriptedRecord("later than the watermark", "106", "Lagos", _nov(1, 12), step=4, likes=6),
    ScriptedRecord("day three, noon", "107", "Seoul", _nov(3, 12), step=4, likes=1),
    # A backfill re-sends the first tweet 26.5 hours after its first delivery.
    ScriptedRecord("re-sent 26.5 hours later", "101", "Lisboa", _nov(2, 11, 30), step=5, likes=7),
)
"""The stream, in arrival order: step 1 is the first micro-batch, and so on."""

COUNTED_BY_SPEED = "counted by speed, then by batch"
LATE = "dropped by speed (late), counted by batch"
DUPLICATE = "duplicate: not counted again"
FORGOTTEN_DUPLICATE = "forgotten duplicate: counted again by speed, not by batch"

_FATES = {
    ("counted", "counted"): COUNTED_BY_SPEED,
    ("dropped: late", "counted"): LATE,
    ("dropped: duplicate", "not counted"): DUPLICATE,
    ("counted", "not counted"): FORGOTTEN_DUPLICATE,
}
"""A delivery's fate from what each layer did with it (speed outcome, batch outcome)."""

_FATE_COLOURS = {
    COUNTED_BY_SPEED: "#55A868",
    LATE: "#DD8452",
    DUPLICATE: "#8172B3",
    FORGOTTEN_DUPLICATE: "#C44E52",
}


def script_frame() -> pd.DataFrame:
    """`SCRIPT` as a table: what each delivery is, before anything runs."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "step": record.step,
                "name": record.name,
                "tweet_id": record.tweet_id,
                "location": record.location,
                "ingest_time": pd.Timestamp(record.ingest_time),
                "likes": record.likes,
            }
            for record in SCRIPT
        ]
    )


def api_line(record: ScriptedRecord) -> bytes:
    """The delivery as one line of the X API v2 filtered stream, like ``ingestion.sample``.

    One author per tweet (its id derived from the tweet's), so a re-sent tweet names the same
    author; ``created_at`` is the ingest time: the tweet reached the collector at once.
    """
    author_id = f"9{record.tweet_id}"
    payload = {
        "data": {
            "author_id": author_id,
            "created_at": format_utc(record.ingest_time),
            "edit_history_tweet_ids": [record.tweet_id],
            "id": record.tweet_id,
            "lang": "en",
            "public_metrics": {
                "retweet_count": 0,
                "reply_count": 0,
                "like_count": record.likes,
                "quote_count": 0,
            },
            "text": f"{record.name} #LambdaArchitecture",
        },
        "includes": {
            "users": [
                {
                    "id": author_id,
                    "name": f"Author of tweet {record.tweet_id}",
                    "username": f"author_{record.tweet_id}",
                    "location": record.location,
                    "public_metrics": {"followers_count": 10},
                }
            ]
        },
    }
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class StepReport:
    """What Spark's progress reports say about one step's run of the speed layer."""

    watermark: datetime | None
    """The watermark of the micro-batch that processed the step (None: none yet)."""
    late_rows: int
    """Rows the stateful operators dropped as older than the watermark."""
    duplicates_dropped: int
    """Rows the deduplication dropped because it remembered their tweet id."""


def play(settings: Settings) -> pd.DataFrame:
    """Play `SCRIPT` through the speed layer step by step, then the batch layer.

    ``settings`` names the lesson's namespace, which is emptied first; its topic must have one
    partition (see the module docstring). Returns one row per delivery, in `SCRIPT` order:
    ``step``, ``name``, ``tweet_id``, ``location``, ``ingest_time``, ``watermark`` (of the
    micro-batch that processed it), ``speed`` and ``batch`` (what each layer did with it, as
    observed) and ``fate``.
    """
    import pandas as pd

    if settings.partitions != 1:
        raise LambdaDemoError(
            f"The late-data lesson needs a topic with one partition, not {settings.partitions}: "
            "pass settings with partitions=1 (each partition has a watermark of its own)."
        )
    reset_namespace(settings)
    rows = []
    speed_before = _speed_rows(settings)
    for step in sorted({record.step for record in SCRIPT}):
        records = [record for record in SCRIPT if record.step == step]
        _send(settings, records)
        report = _run_step(settings)
        speed_after = _speed_rows(settings)
        outcomes = _speed_outcomes(records, report, speed_before, speed_after)
        rows += [(record, report.watermark, outcomes[record]) for record in records]
        speed_before = speed_after
    last_day = max(ingest_day_of(record.ingest_time) for record in SCRIPT)
    run_batch(settings, cutoff=last_day + timedelta(days=1), progress=False)
    batch = _batch_rows(settings)
    frame = []
    for record, watermark, speed in rows:
        counted = batch.get(record.location) == (1, record.likes)
        batch_outcome = "counted" if counted else "not counted"
        frame.append(
            {
                "step": record.step,
                "name": record.name,
                "tweet_id": record.tweet_id,
                "location": record.location,
                "ingest_time": pd.Timestamp(record.ingest_time),
                "watermark": pd.Timestamp(watermark) if watermark else pd.NaT,
                "speed": speed,
                "batch": batch_outcome,
                "fate": _FATES.get(
                    (speed, batch_outcome), f"speed: {speed}; batch: {batch_outcome}"
                ),
            }
        )
    return pd.DataFrame(frame).astype({"watermark": "datetime64[ns, UTC]"})


def _send(settings: Settings, records: list[ScriptedRecord]) -> None:
    """Produce the deliveries through the real handler, each with its chosen Kafka timestamp."""
    producer = kafka_io.producer(settings)
    try:
        handler = TweetHandler.for_settings(producer, settings)
        for record in records:
            handler.handle(api_line(record), ingest_ms=to_millis(record.ingest_time))
        handler.flush()
    finally:
        producer.close()
    counts = handler.counts
    if counts.produced != len(records) or counts.failed:
        raise LambdaDemoError(
            f"Kafka took {counts.produced - counts.failed} of {len(records)} scripted records "
            f"({counts.reasons or 'no rejections'}): is the broker up? (`lambda-demo status`)"
        )


def _run_step(settings: Settings) -> StepReport:
    """One run of the speed layer over what is new: the step's micro-batch (and the one
    without data that follows, in which Spark moves the watermark and forgets old ids)."""
    view_query = run_speed(settings, once=True)[0]
    reports = [json.loads(progress.json) for progress in view_query.recentProgress]
    with_data = [report for report in reports if report["numInputRows"] > 0]
    if not with_data:
        raise LambdaDemoError(
            "The speed layer processed no record of this step: is the topic the one the "
            "settings name? (`lambda-demo status`)"
        )
    watermark = (with_data[0].get("eventTime") or {}).get("watermark")
    operators = [op for report in reports for op in report.get("stateOperators") or []]
    return StepReport(
        watermark=None if watermark in (None, NO_WATERMARK) else _parse_utc(watermark),
        late_rows=sum(op.get("numRowsDroppedByWatermark", 0) for op in operators),
        duplicates_dropped=sum(
            (op.get("customMetrics") or {}).get("numDroppedDuplicateRows", 0) for op in operators
        ),
    )


def _parse_utc(text: str) -> datetime:
    """Spark's ``2026-11-01T07:00:00.000Z`` as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _speed_outcomes(
    records: list[ScriptedRecord],
    report: StepReport,
    before: dict[tuple[date, str], tuple[int, int]],
    after: dict[tuple[date, str], tuple[int, int]],
) -> dict[ScriptedRecord, str]:
    """Per delivery of a step: ``counted`` if its (ingest day, location) row gained one tweet
    with its likes; the others were dropped, and Spark's counters of the step say why."""
    outcomes = {}
    for record in records:
        key = (ingest_day_of(record.ingest_time), record.location)
        count_before, likes_before = before.get(key, (0, 0))
        count_after, likes_after = after.get(key, (0, 0))
        gained = (count_after - count_before, likes_after - likes_before)
        outcomes[record] = "counted" if gained == (1, record.likes) else None
    dropped = [record for record, outcome in outcomes.items() if outcome is None]
    if report.late_rows == len(dropped) and report.duplicates_dropped == 0:
        why = "dropped: late"
    elif report.duplicates_dropped == len(dropped) and report.late_rows == 0:
        why = "dropped: duplicate"
    else:  # the counters do not tell these deliveries apart
        why = "not counted"
    return {record: outcome or why for record, outcome in outcomes.items()}


def _speed_rows(settings: Settings) -> dict[tuple[date, str], tuple[int, int]]:
    """The speed rows serving reads: {(ingest day, location): (tweets, likes)}."""
    frame = warehouse.fetch_frame(
        "SELECT ingest_day, location, tweet_count, likes_sum FROM speed_serving",
        settings=settings,
    )
    return {
        (row.ingest_day, row.location): (int(row.tweet_count), int(row.likes_sum))
        for row in frame.itertuples(index=False)
    }


def _batch_rows(settings: Settings) -> dict[str, tuple[int, int]]:
    """The batch rows serving reads: {location: (tweets, likes)}."""
    frame = warehouse.fetch_frame(
        "SELECT location, tweet_count, likes_sum FROM batch_serving", settings=settings
    )
    return {
        row.location: (int(row.tweet_count), int(row.likes_sum))
        for row in frame.itertuples(index=False)
    }


def late_data_figure(frame: pd.DataFrame) -> Figure:
    """Arrival step against ingest time: the watermark, midnights, and each delivery's fate.

    The watermark is drawn over each step it applied to; a delivery in the grey band below
    it was older than the watermark when it arrived.
    """
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.dates import DateFormatter

    fig, ax = plt.subplots(figsize=(10, 6))
    steps = sorted(frame["step"].unique())
    marks = frame.groupby("step")["watermark"].first()
    times = pd.concat([frame["ingest_time"], marks.dropna()])
    lowest = (times.min() - pd.Timedelta(hours=3)).floor("h")
    highest = (times.max() + pd.Timedelta(hours=3)).ceil("h")
    xs, ys = [], []
    for step in steps:
        if pd.isna(marks[step]):
            ax.text(step, lowest + pd.Timedelta(hours=1), "no watermark yet", ha="center")
        else:
            xs += [step - 0.5, step + 0.5]
            ys += [marks[step]] * 2
    ax.fill_between(xs, ys, lowest, color="grey", alpha=0.2, linewidth=0)
    ax.plot(xs, ys, color="black", linewidth=2, label="watermark of the step's micro-batch")
    midnight = lowest.ceil("D")
    while midnight < highest:
        ax.axhline(midnight, color="grey", linestyle="--", linewidth=1)
        label = f"midnight, {midnight.date().isoformat()}"
        ax.text(steps[-1] + 0.95, midnight, label, ha="right", va="bottom", color="grey")
        midnight += pd.Timedelta(days=1)
    for fate, group in frame.groupby("fate", sort=False):
        ax.scatter(
            group["step"],
            group["ingest_time"],
            s=70,
            color=_FATE_COLOURS.get(fate, "black"),
            edgecolor="white",
            zorder=3,
            label=fate,
        )
    for row in frame.itertuples(index=False):
        ax.annotate(
            row.name,
            (row.step, row.ingest_time),
            xytext=(6, 6),
            textcoords="offset points",
            fontsize=8,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1},
        )
    ax.set_xticks(steps, [f"step {step}" for step in steps])
    ax.set_xlim(steps[0] - 0.5, steps[-1] + 1)
    ax.set_ylim(lowest, highest)
    ax.yaxis.set_major_formatter(DateFormatter("%d %b %H:%M", tz="UTC"))
    ax.set_xlabel("arrival: the step, one micro-batch each, that processed the delivery")
    ax.set_ylabel("ingest time (UTC)")
    ax.set_title("Where each delivery lands: below the watermark (grey), the speed layer drops it")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
