"""``lambda-demo check``: the exactness proof a learner can run at any moment.

It ignores every layer and recomputes the view straight from what was ingested - every record
in the ``tweets`` topic - under the ingestion contract: invalid records are skipped, each
tweet id counts once at its first delivery (``contract.FIRST_DELIVERY_ORDER``: smallest
ingest time, then partition, then offset). Then it compares that, location by location, with
the serving view.

Run it when the speed layer has caught up (``lambda-demo speed --once``): records still on
their way through Spark are, by design, not in the serving view yet. Records that reached
the speed layer after its watermark had passed their day are not in it either, until the
next batch run absorbs their day; when the serving view only lacks tweets, and no more than
Spark reported as late, ``check`` says that this is all it is.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from lambda_demo import view
from lambda_demo.clients import kafka_io
from lambda_demo.contract import DeliveryColumns, Rejected, parse_record
from lambda_demo.serving import reads
from lambda_demo.settings import Settings, get_settings
from lambda_demo.status import speed_figures

if TYPE_CHECKING:
    import pandas as pd

DELIVERY = DeliveryColumns(ingest_time="timestamp_ms", partition="partition", offset="offset")
"""Where `ingested_tweets` keeps each delivery's Kafka coordinates."""


def ingested_tweets(settings: Settings | None = None, *, progress: bool = False) -> pd.DataFrame:
    """Every valid record in the topic, one row per delivery, with its Kafka coordinates.

    Columns: ``tweet_id``, ``timestamp_ms``, ``partition``, ``offset``, the view's key and
    the contract fields its measures read (``view.FIELDS_READ``).
    """
    import pandas as pd

    settings = settings or get_settings()
    fields = view.FIELDS_READ
    consumer = kafka_io.consumer(settings, client_id="lambda-demo-check")
    rows = []
    with contextlib.closing(consumer):
        offsets = kafka_io.partition_offsets(settings, settings.topic, consumer=consumer)
        total = sum(end - begin for begin, end in offsets.values())
        with tqdm(total=total, unit="rec", desc="read topic", disable=not progress) as bar:
            for partition, (begin, end) in offsets.items():
                for record in kafka_io.read_range(
                    settings, settings.topic, partition, begin, end, consumer=consumer
                ):
                    bar.update(1)
                    rows.append(_valid_row(record, fields))
    rows = [row for row in rows if row is not None]
    columns = ["tweet_id", "timestamp_ms", "partition", "offset", view.KEY, *fields]
    return pd.DataFrame(rows, columns=columns)


def _valid_row(record, fields: tuple[str, ...]) -> tuple | None:
    parsed = parse_record(record.value, record.timestamp)
    if isinstance(parsed, Rejected):
        return None
    return (
        parsed.tweet_id,
        record.timestamp,
        record.partition,
        record.offset,
        getattr(parsed, view.KEY),
        *(getattr(parsed, name) for name in fields),
    )


def recompute(tweets: pd.DataFrame) -> pd.DataFrame:
    """The view from deliveries: first delivery of each tweet id wins, then aggregate."""
    first = tweets.sort_values(DELIVERY.first_delivery_order()).drop_duplicates(
        "tweet_id", keep="first"
    )
    return view.pandas_aggregate(first)


@dataclass(frozen=True)
class CheckResult:
    locations: int
    tweets: int
    mismatches: pd.DataFrame
    late_rows: int = 0
    """Rows the serving speed deployment dropped as later than its watermark."""

    @property
    def ok(self) -> bool:
        return self.mismatches.empty

    @property
    def missing_tweets(self) -> int:
        """Tweets the serving view lacks, if every mismatch is only a lack: each mismatching
        location has fewer tweets than expected and no measure above it (else 0)."""
        rows = self.mismatches
        if rows.empty:
            return 0
        fewer = rows["tweet_count_serving"] < rows["tweet_count_expected"]
        nothing_extra = (
            rows[[f"{m}_serving" for m in view.MEASURE_NAMES]].to_numpy()
            <= rows[[f"{m}_expected" for m in view.MEASURE_NAMES]].to_numpy()
        ).all(axis=1)
        if not (fewer & nothing_extra).all():
            return 0
        return int((rows["tweet_count_expected"] - rows["tweet_count_serving"]).sum())

    @property
    def only_late(self) -> bool:
        """Every mismatch is explained by records the speed layer received too late."""
        return not self.ok and 0 < self.missing_tweets <= self.late_rows

    def to_json(self) -> str:
        return json.dumps(
            {
                "ok": self.ok,
                "locations": self.locations,
                "tweets": self.tweets,
                "mismatches": json.loads(self.mismatches.to_json(orient="records")),
                "late_rows": self.late_rows,
                "only_late": self.only_late,
            }
        )

    def __str__(self) -> str:
        if self.ok:
            return f"check: OK - {self.locations} locations, {self.tweets} tweets, 0 mismatches"
        shown = self.mismatches.head(10).to_string(index=False)
        more = len(self.mismatches) - 10
        late = (
            f"\nAll {self.missing_tweets} missing tweets can be records that reached the speed "
            f"layer after its watermark had passed their day (Spark dropped {self.late_rows} "
            "late rows). They are not lost: the next batch run with a cutoff after their day "
            "counts them."
        )
        return (
            f"check: {len(self.mismatches)} MISMATCHES over {self.locations} locations\n{shown}"
            + (f"\n... and {more} more (--json lists them all)" if more > 0 else "")
            + (late if self.only_late else "")
        )


def compare(expected: pd.DataFrame, actual: pd.DataFrame) -> pd.DataFrame:
    """Rows where the two views differ: ``*_expected`` vs ``*_serving`` for each measure."""
    merged = expected.merge(
        actual, on=view.KEY, how="outer", suffixes=("_expected", "_serving"), indicator=True
    )
    measures = [c for c in merged.columns if c.endswith(("_expected", "_serving"))]
    merged[measures] = merged[measures].fillna(0).astype("int64")
    differs = merged["_merge"] != "both"
    for m in view.MEASURE_NAMES:
        differs |= merged[f"{m}_expected"] != merged[f"{m}_serving"]
    return merged.loc[differs].drop(columns="_merge").reset_index(drop=True)


def check(settings: Settings | None = None, *, progress: bool = False) -> CheckResult:
    settings = settings or get_settings()
    expected = recompute(ingested_tweets(settings, progress=progress))
    actual = reads.serving_view(settings)
    return CheckResult(
        locations=len(expected),
        tweets=int(expected["tweet_count"].sum()) if not expected.empty else 0,
        mismatches=compare(expected, actual),
        late_rows=speed_figures(settings)["late_rows"] or 0,
    )
