"""Lambda vs Kappa, measured fairly: recompute the whole view both ways, at several sizes.

Notebook 07 uses these. Both recomputations start from their durable copy of every record and
end with the view in an empty warehouse schema; both validate, deduplicate and quarantine:

* **Kappa** (`recovery.reprocess_from_kafka`): replay the whole topic through the speed
  layer's own code, a new streaming query from offset 0, as Jay Kreps proposed.
* **Lambda** (`recovery.rebuild_from_master_dataset`): load the S3 master dataset into the
  warehouse and recompute the view with SQL.

What "fairly" means here:

* **Spark's start-up is not timed.** A Kappa deployment starts its JVM and its Python workers
  once, not once per reprocessing, so `measure` starts the session and then runs each
  approach once on the smallest size (the *cold* runs, reported but not compared) before
  any run that counts. Measured cold, the first reprocessing also pays for the Python
  workers, the code generation and the state store's native library: seconds that say
  nothing about Kappa.
* **Archiving is not timed either.** In a running Lambda pipeline the archiver copies Kafka to
  S3 all along (every batch run), so a recomputation finds the master dataset already there;
  `prepare` archives before any clock starts, as Kafka already holds the log.
* **Each size has a pipeline of its own** (`namespace`): a topic, a bucket, a schema and
  checkpoints, so Kappa replays exactly that size's log.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from lambda_demo.batch.archiver import PREFIX, archive
from lambda_demo.clients import kafka_io
from lambda_demo.clients.spark import get_spark
from lambda_demo.ingestion.handler import IngestCounts
from lambda_demo.ingestion.replay import replay
from lambda_demo.settings import Settings
from lambda_demo.tutorial import recovery
from lambda_demo.tutorial.explore import list_objects, reset_namespace, sample_file

if TYPE_CHECKING:
    import pandas as pd

SIZES = (2_000, 8_000, 32_000)
"""Tweets per pipeline in notebook 07: small enough for about a minute on two cores."""
SEED = 18
STREAM_START = datetime(2026, 11, 1, tzinfo=UTC)
STREAM_DAYS = 3
AFTER_THE_STREAM = (STREAM_START + timedelta(days=STREAM_DAYS + 1)).date()
"""A cutoff after every generated delivery (late ones and duplicates arrive up to about 20
minutes after the last day), so the rebuilt batch view covers every tweet."""

Approach = Literal["Kappa", "Lambda"]


def namespace(base: Settings, *, tweets: int) -> Settings:
    """The pipeline of one size: ``base``'s names with ``-kappa-<tweets>`` appended."""
    topic = f"{base.topic}-kappa-{tweets}"
    return base.model_copy(
        update={
            "topic": topic,
            "dlq_topic": f"{topic}.dlq",
            "s3_bucket": f"{base.s3_bucket}-kappa-{tweets}",
            "warehouse_schema": f"{base.warehouse_schema}_kappa_{tweets}",
            "checkpoint_location": f"{base.checkpoints}/kappa-{tweets}",
        }
    )


def prepare(settings: Settings, *, tweets: int, seed: int = SEED) -> IngestCounts:
    """Empty the pipeline, replay a generated stream of ``tweets`` tweets, archive it to S3.

    The stream has the usual faults (duplicate deliveries, late and malformed lines), so both
    recomputations have real work to do. Emptying first makes every run tell the same story.
    """
    reset_namespace(settings)
    stream = sample_file(
        f"kappa-{tweets}-{seed}.jsonl.gz",
        tweets=tweets,
        days=STREAM_DAYS,
        seed=seed,
        start=STREAM_START,
        settings=settings,
    )
    counts = replay([stream], settings=settings, progress=False)
    archive(settings, progress=False)
    return counts


@dataclass(frozen=True)
class StoredBytes:
    """What one pipeline's history occupies: Kafka's log (one replica) and the S3 archive."""

    records: int
    kafka: int
    s3: int


def stored_bytes(settings: Settings) -> StoredBytes:
    """Bytes of the topic's log on the broker's disk, and of the master dataset in S3.

    Kafka reports each partition's size on disk (``describe_log_dirs``): the record batches
    as the producer compressed them, per replica.
    """
    client = kafka_io.admin(settings)
    with contextlib.closing(client):
        kafka = sum(
            partition["partition_size"]
            for broker in client.describe_log_dirs()
            for log_dir in broker["log_dirs"]
            for topic in log_dir["topics"]
            if topic["name"] == settings.topic
            for partition in topic["partitions"]
        )
    offsets = kafka_io.partition_offsets(settings, settings.topic)
    records = sum(end - begin for begin, end in offsets.values())
    s3 = int(list_objects(PREFIX, settings=settings)["size_bytes"].sum())
    return StoredBytes(records=records, kafka=kafka, s3=s3)


@dataclass(frozen=True)
class Run:
    """One recomputation of the whole view, and when its clock started."""

    approach: Approach
    tweets: int
    seconds: float
    started_at: float
    """Wall-clock time (``time.time()``) just before the recomputation began."""
    view: pd.DataFrame = field(repr=False)


def recompute_both(settings: Settings, *, tweets: int, tag: str = "") -> list[Run]:
    """Kappa, then Lambda, each into an empty schema of its own, each timed alone.

    The schemas are the pipeline's with ``tag``, then ``_kappa`` or ``_lambda``, appended.
    """
    schema = f"{settings.warehouse_schema}{tag}"
    runs = []
    started_at = time.time()
    kappa = recovery.reprocess_from_kafka(settings, schema=f"{schema}_kappa")
    runs.append(Run("Kappa", tweets, kappa.seconds, started_at, kappa.view))
    started_at = time.time()
    lambda_ = recovery.rebuild_from_master_dataset(
        settings, schema=f"{schema}_lambda", cutoff=AFTER_THE_STREAM
    )
    runs.append(Run("Lambda", tweets, lambda_.seconds, started_at, lambda_.view))
    return runs


@dataclass(frozen=True)
class Measurement:
    """The cold runs (Spark warming up: not compared) and the runs that count."""

    cold: list[Run]
    runs: list[Run]

    def table(self) -> pd.DataFrame:
        """Seconds per size (rows) and approach (columns), for the runs that count."""
        import pandas as pd

        frame = pd.DataFrame(
            [{"tweets": r.tweets, "approach": r.approach, "seconds": r.seconds} for r in self.runs]
        )
        return frame.pivot(index="tweets", columns="approach", values="seconds")


def measure(pipelines: Mapping[int, Settings]) -> Measurement:
    """Start Spark, warm both approaches up on the smallest pipeline, then time every size.

    ``pipelines`` maps a number of tweets to its prepared pipeline (`namespace`, `prepare`).
    The cold runs write to schemas of their own: Spark reports a query's progress
    asynchronously, and a report that arrived while the next run was emptying the same schema
    would fail to be recorded (a warning in the notebook, nothing worse).
    """
    smallest = min(pipelines)
    get_spark(pipelines[smallest])
    cold = recompute_both(pipelines[smallest], tweets=smallest, tag="_cold")
    runs = [run for n in sorted(pipelines) for run in recompute_both(pipelines[n], tweets=n)]
    return Measurement(cold=cold, runs=runs)
