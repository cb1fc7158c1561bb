"""The speed layer's definition: read Kafka, validate, deduplicate, then aggregate per micro-batch.

Read -> validate -> deduplicate -> aggregate -> write, as one streaming query on the topic.
Each step is a function of its own (`read_kafka`, `validate` and `keep_valid`, `deduplicate`,
`aggregate`; the write is ``sink.SpeedViewSink``), and every step after the read works on a
static DataFrame too: `read_kafka_slice` reads the topic's first records with ``spark.read``,
so notebook 03 runs the very same functions one at a time on a slice it can show.

* **Validate** runs the package's own ``contract.parse_record`` on Arrow batches
  (``mapInPandas``), so Spark, the batch loader and ``check`` apply the very same rules, and
  keeps the contract fields the view's measures read (``view.FIELDS_READ``). In the streaming
  query the workers also write each rejected record, raw bytes and reason, to the warehouse's
  quarantine as they find it (``sink.quarantine_rejected``): each record is read and validated
  once.
* **Deduplicate** is Spark's state: the tweet ids seen recently, so a tweet delivered twice
  passes once.
* **Aggregate** runs in the sink, on each micro-batch's new tweets: the view's measures per
  (ingest day, location), which the sink *adds* to ``speed_view`` in the transaction that
  records the micro-batch's id, so a micro-batch replayed after a crash is skipped instead
  of counted twice.

Why the sums are not Spark state too: each stateful operator is a shuffle stage that loads
and commits its state store, about 0.2 s per micro-batch on a 2-core laptop, and a tweet
waits for about two micro-batches before a reader sees it. A micro-batch's new tweets are a
few hundred rows; summing them in the driver costs milliseconds (``benchmarks/notes.md``).

**What keeps the state small.** The speed layer only has to cover what the batch layer has
not absorbed yet, so it must forget. The query carries a watermark `WATERMARK` behind the
newest ingest time it has seen, and the deduplication forgets a tweet id once the watermark
has passed its ingest time plus `WATERMARK` (so about two days of ids). However long the
stream runs, the state stays that size (``lambda-demo status`` shows ``state_rows``). 25
hours, because a duplicate delivery may come a day late, across midnight, and must still be
recognised. The view's rows of a day go when the batch layer takes that day over.

**Records later than the watermark** are dropped by Spark: the speed layer has already
forgotten the ids of their time. Nothing is lost: the master dataset has them, and the next
batch run whose cutoff is past their day counts them. ``check`` says so when that is the
only difference (Spark counts them as ``late_rows``).

**One far-future record cannot switch the speed layer off.** A watermark follows the newest
ingest time, so one record stamped next year would make every later record "late". Each
Kafka partition therefore gets its own watermark, and the query's watermark is the *minimum*
of them (Spark's default policy for several inputs): one foreign record moves only its own
partition's watermark. (A producer writing such records into every partition would move it;
the records are still counted, by the batch layer, and ``status`` shows the watermark.) The
price: Spark counts a partition that has received nothing since the query started as being
at time zero, so the watermark, and with it the forgetting, waits until every partition of
the topic has delivered a valid tweet in the current run. A live topic keyed by tweet id
fills every partition within seconds; a topic with an idle partition keeps its state.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from lambda_demo import view
from lambda_demo.clients import kafka_io
from lambda_demo.contract import Rejected, parse_record
from lambda_demo.errors import LambdaDemoError
from lambda_demo.settings import Settings

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger(__name__)

WATERMARK = "25 hours"
"""How far behind the newest ingest time the speed layer still accepts a record."""


def parsed_schema(fields: tuple[str, ...]) -> str:
    """The schema of `validator`'s output for the contract fields ``fields``."""
    return ", ".join(
        (
            "kafka_partition int, kafka_offset long, ingest_ms long, reason string",
            f"raw_value binary, tweet_id string, {view.KEY} string",
            *(f"{name} long" for name in fields),
        )
    )


def validator(
    fields: tuple[str, ...], quarantine: Settings | None = None
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The function Spark's Python workers run on Kafka rows: the contract, then ``fields``.

    The driver calls this with the view's fields and Spark ships the returned closure, list
    included, to its workers. The workers import the package from disk, so a list they
    derived themselves would miss a measure added in the driver at run time (in a notebook,
    or by tests/integration/test_add_measure.py); this one is what the driver's view reads.
    With ``quarantine``, the workers write each Arrow batch's rejected records there.
    """
    flat = ("tweet_id", view.KEY, *fields)

    def validate_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        from lambda_demo.speed.sink import quarantine_rejected

        for batch in batches:
            out: dict[str, list] = {name: [] for name in ("reason", "raw_value", *flat)}
            for value, ingest_ms in zip(batch["value"], batch["ingest_ms"], strict=True):
                parsed = parse_record(value, int(ingest_ms))
                valid = not isinstance(parsed, Rejected)
                out["reason"].append(None if valid else parsed.reason)
                out["raw_value"].append(None if valid else value)
                for name in flat:
                    out[name].append(getattr(parsed, name) if valid else None)
            frame = pd.DataFrame(
                {
                    "kafka_partition": batch["partition"].astype("int32"),
                    "kafka_offset": batch["offset"],
                    "ingest_ms": batch["ingest_ms"],
                }
            )
            for name, values in out.items():
                # Nullable Int64, not float64: sums and counts beyond 2**53 must stay exact.
                dtype = "Int64" if name in fields else "object"
                frame[name] = pd.Series(values, dtype=dtype, index=frame.index)
            if quarantine is not None:
                quarantine_rejected(quarantine, frame[frame["reason"].notna()])
            yield frame

    return validate_batches


def topic_partitions(settings: Settings) -> list[int]:
    """The partitions of the ``tweets`` topic, or an error that says what to do."""
    consumer = kafka_io.consumer(settings, client_id="lambda-demo-speed")
    try:
        ids = consumer.partitions_for_topic(settings.topic)
    finally:
        consumer.close()
    if not ids:
        raise LambdaDemoError(
            f"Topic {settings.topic!r} does not exist: start the stack (`lambda-demo stack up`) "
            "or check LAMBDA_DEMO_TOPIC."
        )
    return sorted(ids)


def read_kafka(spark: SparkSession, settings: Settings, *, partition: int) -> DataFrame:
    """Read: one partition of the topic as an unbounded stream of Kafka rows, from its first
    offset (one stream per partition: see `valid_tweets`)."""
    return (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", kafka_io.bootstrap(settings))
        .option("assign", json.dumps({settings.topic: [partition]}))
        .option("startingOffsets", "earliest")
        .option("failOnDataLoss", "true")
        .option("maxOffsetsPerTrigger", 200_000)
        # After each read the consumer asks the broker for more in the background, and the
        # broker holds that request up to this long when nothing new has arrived; the next
        # micro-batch's read may wait for it. Kafka's default is 500 ms: a whole trigger.
        .option("kafka.fetch.max.wait.ms", "10")
        .load()
    )


def read_kafka_slice(spark: SparkSession, settings: Settings, *, per_partition: int) -> DataFrame:
    """Read, as a static DataFrame: the first ``per_partition`` records of every partition.

    The same Kafka rows `read_kafka` streams, read once with ``spark.read``, so every later
    step can be run, shown and checked on a small slice before it runs as a stream.
    """
    offsets = kafka_io.partition_offsets(settings, settings.topic)
    ends = {str(p): min(begin + per_partition, end) for p, (begin, end) in offsets.items()}
    return (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", kafka_io.bootstrap(settings))
        .option("assign", json.dumps({settings.topic: sorted(offsets)}))
        .option("startingOffsets", "earliest")
        .option("endingOffsets", json.dumps({settings.topic: ends}))
        .load()
    )


def validate(rows: DataFrame, *, quarantine: Settings | None = None) -> DataFrame:
    """Validate: the contract applied to Kafka rows, one output row per input record.

    A valid tweet has ``reason`` null and the contract fields the view reads; a record that
    breaks the contract keeps its raw bytes and the reason. With ``quarantine`` (the
    streaming query's settings), the workers also record each rejected record in that
    warehouse as they find it; a slice validated to be looked at writes nothing.
    """
    from pyspark.sql import functions as F

    fields = view.FIELDS_READ
    return (
        # Milliseconds, not timestamps, cross into Python: pandas timestamps end in 2262, and
        # a foreign producer may stamp a record in year 9999.
        rows.select("partition", "offset", F.unix_millis("timestamp").alias("ingest_ms"), "value")
        .mapInPandas(validator(fields, quarantine), schema=parsed_schema(fields))
        .withColumn("ingest_ts", F.timestamp_millis("ingest_ms"))
    )


def keep_valid(parsed: DataFrame) -> DataFrame:
    """The valid tweets among `validate`'s rows (the others are in the quarantine)."""
    return parsed.where("reason IS NULL")


def parsed_stream(spark: SparkSession, settings: Settings, *, partition: int) -> DataFrame:
    """Kafka rows with the contract applied, as a stream: `read_kafka`, then `validate`,
    which quarantines the rejected records in the settings' warehouse."""
    return validate(read_kafka(spark, settings, partition=partition), quarantine=settings)


def valid_tweets(spark: SparkSession, settings: Settings) -> DataFrame:
    """Valid tweets with their ingest time, each Kafka partition under its own watermark.

    Invalid records are filtered out *before* the watermark, so a quarantined timestamp
    cannot move it; one input per partition, so one far-ahead record moves only its own.
    """
    branches = [
        keep_valid(parsed_stream(spark, settings, partition=p)).withWatermark(
            "ingest_ts", WATERMARK
        )
        for p in topic_partitions(settings)
    ]
    return functools.reduce(lambda a, b: a.unionByName(b), branches)


def deduplicate(tweets: DataFrame) -> DataFrame:
    """Deduplicate: one row per tweet id, the first delivery *processed*.

    On a stream, an id is remembered until the watermark has passed its ingest time plus
    `WATERMARK`; that is the one place the speed layer differs from
    ``contract.FIRST_DELIVERY_ORDER`` (documented there). A static DataFrame has no watermark
    (Spark refuses ``dropDuplicatesWithinWatermark`` on one): there, one row per id is kept over
    the whole DataFrame.
    """
    if tweets.isStreaming:
        return tweets.dropDuplicatesWithinWatermark(["tweet_id"])
    return tweets.dropDuplicates(["tweet_id"])


def aggregate(tweets: DataFrame) -> pd.DataFrame:
    """Aggregate: the view's measures per (ingest day, location), as pandas, in the driver.

    ``tweets`` is static: one micro-batch of `deduplicate`'s output (tweets seen for the first
    time, so their sums are what the view grows by), or a slice. The day is the UTC day of the
    ingest time (``to_date`` in the session's time zone, ``contract.INGEST_DAY_ZONE``). The
    sums are ``view.pandas_aggregate``'s, the definition ``check`` recomputes the view with.
    """
    from pyspark.sql import functions as F

    new = tweets.select(F.to_date("ingest_ts").alias("ingest_day"), view.KEY, *view.FIELDS_READ)
    return view.pandas_aggregate(new.toPandas(), by=("ingest_day", view.KEY))
