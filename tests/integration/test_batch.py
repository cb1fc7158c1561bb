"""The batch layer on the real stack: Kafka -> S3 -> PostgreSQL, checked against pandas.

Every expectation is computed here from what the test itself produced (its own dedup, its
own object layout), never by calling the code under test.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

import helpers
import pandas as pd
import pytest
from helpers import query
from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from lambda_demo import view
from lambda_demo.batch.archiver import GROUP_ID, SimulatedCrash, archive
from lambda_demo.batch.run import BatchBusyError, batch_lock, pipeline_day, run_batch
from lambda_demo.clients import kafka_io, storage
from lambda_demo.contract import FlatTweet
from lambda_demo.settings import Settings

pytestmark = pytest.mark.integration

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY1 = date(2024, 3, 1)
CUTOFF = date(2024, 3, 4)  # every partition's newest record is on it: the default cutoff
TRICKY_LOCATIONS = [
    "Paris; France",
    'He said "hi"',
    "Austin, TX",
    "line1\nline2",
    "crlf\r\nend",
    "🌍 Earth 🚀",
    "\\.",
    "a\n\\.\nb",
    "",
    "tab\there",
    "sep\u2028line",
    "nel\x85x",
    "München",
]
GARBAGE = {  # value -> the reason parse_flat gives
    b"not json{": "not_json",
    b"\xff\xfe\x00 not utf-8": "not_utf8",
    None: "null_value",
}


@dataclass(frozen=True)
class Sent:
    """One record as produced, with where Kafka put it."""

    value: bytes | None
    timestamp_ms: int
    partition: int
    offset: int
    tweet: FlatTweet | None


Record = tuple[FlatTweet | None, bytes | None, int, int | None]


def at(day: date, hh: int = 0, mm: int = 0, ss: int = 0, ms: int = 0) -> int:
    moment = datetime(day.year, day.month, day.day, hh, mm, ss, ms * 1000, tzinfo=UTC)
    return (moment - EPOCH) // timedelta(milliseconds=1)


def tweet(tweet_id: int | str, location: str, *, likes: int = 1, followers: int = 10) -> FlatTweet:
    """A valid tweet whose retweet count varies with its id, so the sums differ per tweet."""
    retweets = int(tweet_id) % 7
    return helpers.tweet(tweet_id, location, followers=followers, likes=likes, retweets=retweets)


def dataset() -> list[Record]:
    """(tweet, value, timestamp_ms, forced partition), in timestamp order."""
    day = [DAY1 + timedelta(days=i) for i in range(4)]
    out: list[Record] = []

    def add(t: FlatTweet, ts: int, partition: int | None = None) -> None:
        out.append((t, t.to_json_bytes(), ts, partition))

    for i in range(60):  # 20 a day over three days, every tricky location
        d = day[i // 20]
        loc = TRICKY_LOCATIONS[i % len(TRICKY_LOCATIONS)]
        add(tweet(100 + i, loc, likes=i, followers=1000 + i), at(d, 1 + i % 20, i))
    # Delivered three times on one day: the first wins.
    for minute, likes in enumerate((3, 300, 3000)):
        add(tweet(1003, "Paris; France", likes=likes), at(day[0], 12, minute))
    # Straddles midnight: first delivery on day 1 at 23:59, duplicate on day 2 at 00:01.
    add(tweet(1001, "Paris; France", likes=5), at(day[0], 23, 59))
    add(tweet(1001, "Austin, TX", likes=99), at(day[1], 0, 1))
    # Same instant in two partitions: partition 0 wins although partition 2 got it first.
    add(tweet(1002, "Austin, TX", likes=1000), at(day[1], 6), partition=2)
    add(tweet(1002, "🌍 Earth 🚀", likes=7), at(day[1], 6), partition=0)
    # The largest id allowed, and two ids that are different tweets though equal as numbers.
    add(tweet(2**63 - 1, "München", likes=11), at(day[1], 7))
    add(tweet("7", "München", likes=12), at(day[1], 7, 1))
    add(tweet("007", "München", likes=13), at(day[1], 7, 2))
    # Garbage from a foreign producer, and a count that is a float.
    for i, value in enumerate(GARBAGE):
        out.append((None, value, at(day[i], 8), None))
    bad_count = json.loads(tweet(1006, "Austin, TX").to_json_bytes())
    bad_count["like_count"] = 1.0
    out.append((None, json.dumps(bad_count).encode(), at(day[2], 9), None))
    # Valid JSON, but SQL text cannot hold U+0000: the contract refuses it.
    out.append((None, tweet(1007, "nul\x00byte").to_json_bytes(), at(day[2], 9, 1), None))
    # Day 3, re-delivered after the cutoff: counts once, on day 3.
    add(tweet(1004, "crlf\r\nend", likes=4), at(day[2], 10))
    add(tweet(1004, "crlf\r\nend", likes=44), at(CUTOFF))
    # Both sides of the cutoff, by one millisecond.
    add(tweet(2001, "boundary-in"), at(day[2], 23, 59, 59, 999))
    add(tweet(2002, "boundary-out"), at(CUTOFF))
    # The pipeline clock is the earliest partition's newest record: every partition reaches
    # the cutoff day, so the default cutoff is that day.
    for partition in range(3):
        add(tweet(3000 + partition, "last-day"), at(CUTOFF, 1), partition=partition)
    out.sort(key=lambda r: r[2])
    return out


EXPECTED_REASONS = sorted([*GARBAGE.values(), "bad_like_count", "nul_character"])


def produce(settings: Settings, records: list[Record] | None = None) -> list[Sent]:
    producer = kafka_io.producer(settings)
    futures = []
    for t, value, ts, partition in records or dataset():
        key = t.tweet_id.encode() if t is not None else b"garbage"
        futures.append(
            (
                t,
                value,
                ts,
                producer.send(
                    settings.topic, key=key, value=value, timestamp_ms=ts, partition=partition
                ),
            )
        )
    producer.flush()
    sent = []
    for t, value, ts, future in futures:
        meta = future.get(timeout=30)
        sent.append(Sent(value, ts, meta.partition, meta.offset, t))
    producer.close()
    return sent


def expected_view(sent: list[Sent], cutoff: date) -> pd.DataFrame:
    """Dedup (first by ingest time, partition, offset), then keep the days before ``cutoff``."""
    rows = [
        {
            "tweet_id": s.tweet.tweet_id,
            "ts": s.timestamp_ms,
            "partition": s.partition,
            "offset": s.offset,
            "location": s.tweet.location,
            "followers_count": s.tweet.followers_count,
            "like_count": s.tweet.like_count,
            "retweet_count": s.tweet.retweet_count,
        }
        for s in sent
        if s.tweet is not None
    ]
    frame = pd.DataFrame(rows).sort_values(["ts", "partition", "offset"])
    first = frame.drop_duplicates("tweet_id", keep="first")
    days = pd.to_datetime(first["ts"], unit="ms", utc=True).dt.date
    return _normalise(view.pandas_aggregate(first[days < cutoff]))


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame[list(view.COLUMNS)].sort_values(view.KEY).reset_index(drop=True)
    return frame.astype({name: "int64" for name in view.MEASURE_NAMES})


def current_view(settings: Settings) -> pd.DataFrame:
    rows = query(
        settings,
        f"SELECT {', '.join(view.COLUMNS)} FROM batch_view "
        "WHERE run_id = (SELECT run_id FROM batch_meta)",
    )
    return _normalise(pd.DataFrame(rows, columns=list(view.COLUMNS)))


def s3_objects(settings: Settings) -> dict[str, bytes]:
    client = storage.s3_client(settings)
    listing = client.list_objects_v2(Bucket=settings.s3_bucket, Prefix="tweets/")
    keys = [item["Key"] for item in listing.get("Contents", []) if not item["Key"].endswith("/")]
    return {
        key: client.get_object(Bucket=settings.s3_bucket, Key=key)["Body"].read() for key in keys
    }


def expected_keys(sent: list[Sent], *, cap: int = 50_000) -> set[str]:
    """Runs of consecutive offsets with the same ingest date, per partition."""

    def day(s: Sent) -> date:
        return datetime.fromtimestamp(s.timestamp_ms // 1000, UTC).date()

    keys = set()
    for partition in {s.partition for s in sent}:
        runs: list[list[Sent]] = []
        for s in sorted((s for s in sent if s.partition == partition), key=lambda s: s.offset):
            if runs and len(runs[-1]) < cap and day(runs[-1][0]) == day(s):
                runs[-1].append(s)
            else:
                runs.append([s])
        keys |= {
            f"tweets/ingest_date={day(run[0])}/partition={partition}/"
            f"offsets-{run[0].offset:012d}-{run[-1].offset:012d}.jsonl.gz"
            for run in runs
        }
    return keys


def archived_lines(objects: dict[str, bytes]) -> list[dict]:
    lines = []
    for body in objects.values():
        lines += [json.loads(line) for line in gzip.decompress(body).split(b"\n") if line]
    return lines


def raw_deliveries(settings: Settings) -> list[tuple]:
    return query(
        settings,
        "SELECT kafka_partition, kafka_offset, tweet_id, location, like_count FROM raw_tweets "
        "ORDER BY kafka_partition, kafka_offset",
    )


def valid_deliveries(sent: list[Sent]) -> list[tuple[int, int]]:
    return sorted((s.partition, s.offset) for s in sent if s.tweet is not None)


def test_batch_view_matches_pandas_and_quarantines_garbage(settings: Settings) -> None:
    sent = produce(settings)
    assert pipeline_day(settings) == CUTOFF

    summary = run_batch(settings, progress=False)

    assert summary.cutoff == CUTOFF
    expected = expected_view(sent, CUTOFF)
    pd.testing.assert_frame_equal(current_view(settings), expected)
    assert summary.locations == len(expected)
    assert summary.tweets_in_view == expected["tweet_count"].sum()
    assert summary.records_archived == len(sent)
    assert summary.rows_loaded == len(valid_deliveries(sent))
    assert summary.quarantined == len(EXPECTED_REASONS)
    assert "boundary-in" in set(expected["location"])  # the dataset covers both sides
    assert "boundary-out" not in set(expected["location"])
    # The dataset has teeth: counting every delivery would give another view.
    every_delivery = [
        replace(s, tweet=replace(s.tweet, tweet_id=str(10**6 + i)))
        for i, s in enumerate(sent)
        if s.tweet is not None
    ]
    assert not expected.equals(expected_view(every_delivery, CUTOFF))

    # The master dataset: the layout computed here, and exactly the bytes Kafka had.
    objects = s3_objects(settings)
    assert set(objects) == expected_keys(sent)
    lines = {(line["partition"], line["offset"]): line for line in archived_lines(objects)}
    assert len(lines) == len(sent)
    for s in sent:
        line = lines[(s.partition, s.offset)]
        assert line["timestamp_ms"] == s.timestamp_ms
        if s.value is not None and "value_b64" in line:
            assert s.value == base64.b64decode(line["value_b64"])
        else:
            assert line["value"] == (None if s.value is None else s.value.decode("utf-8"))

    # Every delivery is in raw_tweets exactly once; the garbage is in quarantine, with bytes.
    assert [(p, o) for p, o, *_ in raw_deliveries(settings)] == valid_deliveries(sent)
    quarantined = query(
        settings,
        "SELECT layer, kafka_partition, kafka_offset, ingest_ts, reason, raw_value "
        "FROM quarantine ORDER BY reason",
    )
    assert sorted(row[4] for row in quarantined) == EXPECTED_REASONS
    garbage = {(s.partition, s.offset): s for s in sent if s.tweet is None}
    for layer, partition, offset, ingest_ts, _reason, raw_value in quarantined:
        s = garbage[(partition, offset)]
        assert layer == "batch"
        assert ingest_ts == EPOCH + timedelta(milliseconds=s.timestamp_ms)
        assert (None if raw_value is None else bytes(raw_value)) == s.value


def test_second_run_changes_nothing_and_a_new_record_is_appended(settings: Settings) -> None:
    sent = produce(settings)
    run_batch(settings, progress=False)
    objects, raw, view_before = (
        s3_objects(settings),
        raw_deliveries(settings),
        current_view(settings),
    )
    quarantined = query(settings, "SELECT * FROM quarantine ORDER BY 1, 2, 3")

    again = run_batch(settings, progress=False)

    assert (again.objects_written, again.records_archived) == (0, 0)
    assert (again.objects_loaded, again.rows_loaded, again.quarantined) == (0, 0, 0)
    assert s3_objects(settings) == objects
    assert raw_deliveries(settings) == raw
    assert query(settings, "SELECT * FROM quarantine ORDER BY 1, 2, 3") == quarantined
    pd.testing.assert_frame_equal(current_view(settings), view_before)
    # Readers see exactly one run: the one batch_meta points at.
    runs = query(settings, "SELECT DISTINCT run_id FROM batch_view")
    assert runs == query(settings, "SELECT run_id FROM batch_meta") == [(again.run_id,)]
    # The committed offsets show progress: the end of every partition.
    consumer = kafka_io.consumer(settings, group_id=GROUP_ID)
    partitions = [TopicPartition(settings.topic, p) for p in range(settings.partitions)]
    ends = consumer.end_offsets(partitions)
    assert {tp: consumer.committed(tp) for tp in partitions} == ends
    consumer.close()

    late_tweet = tweet(3001, "late")
    late = produce(settings, [(late_tweet, late_tweet.to_json_bytes(), at(CUTOFF, 1), None)])
    third = run_batch(settings, progress=False)
    assert (third.objects_written, third.records_archived, third.rows_loaded) == (1, 1, 1)
    after = s3_objects(settings)
    assert {k: v for k, v in after.items() if k in objects} == objects
    assert set(after) == expected_keys(sent) | expected_keys(late) | set(objects)
    assert third.cutoff == CUTOFF  # same pipeline day, so 'late' is not in the view
    pd.testing.assert_frame_equal(current_view(settings), view_before)


def test_archive_is_deterministic_byte_for_byte(settings: Settings) -> None:
    """Archiving the same offsets into a fresh bucket writes the same keys and bytes."""
    produce(settings)
    archive(settings, progress=False)
    first = s3_objects(settings)

    other = settings.model_copy(update={"s3_bucket": settings.s3_bucket + "-copy"})
    storage.ensure_bucket(other)
    _commit_zero(settings)  # the fresh bucket must start at offset 0 too
    archive(other, progress=False)

    assert s3_objects(other) == first


def _commit_zero(settings: Settings) -> None:
    consumer = kafka_io.consumer(settings, group_id=GROUP_ID)
    partitions = [TopicPartition(settings.topic, p) for p in range(settings.partitions)]
    consumer.assign(partitions)
    consumer.commit({tp: OffsetAndMetadata(0, "", -1) for tp in partitions})
    consumer.close()


def test_crash_between_write_and_commit_loses_and_duplicates_nothing(settings: Settings) -> None:
    sent = produce(settings)

    with pytest.raises(SimulatedCrash):
        archive(settings, progress=False, fail_after_write=True)

    (written,) = s3_objects(settings)  # exactly one object, and its offsets not committed
    consumer = kafka_io.consumer(settings, group_id=GROUP_ID)
    partitions = [TopicPartition(settings.topic, p) for p in range(settings.partitions)]
    assert all(consumer.committed(tp) is None for tp in partitions)
    consumer.close()

    summary = run_batch(settings, progress=False)

    objects = s3_objects(settings)
    assert written in objects
    assert set(objects) == expected_keys(sent)  # the same layout as a run without the crash
    assert summary.records_archived + len(archived_lines({written: objects[written]})) == len(sent)
    offsets = sorted((line["partition"], line["offset"]) for line in archived_lines(objects))
    assert offsets == sorted((s.partition, s.offset) for s in sent)  # no loss, no duplicate
    assert [(p, o) for p, o, *_ in raw_deliveries(settings)] == valid_deliveries(sent)
    pd.testing.assert_frame_equal(current_view(settings), expected_view(sent, CUTOFF))


@pytest.mark.parametrize("days_after", [-2, -1, 1])
def test_explicit_cutoff_puts_records_on_the_right_side(
    settings: Settings, days_after: int
) -> None:
    sent = produce(settings)
    cutoff = CUTOFF + timedelta(days=days_after)

    summary = run_batch(settings, cutoff=cutoff, progress=False)

    assert summary.cutoff == cutoff
    assert query(settings, "SELECT cutoff_day FROM batch_meta") == [(cutoff,)]
    got = current_view(settings)
    pd.testing.assert_frame_equal(got, expected_view(sent, cutoff))
    locations = set(got["location"])
    assert ("boundary-in" in locations) == (days_after >= 0)
    assert ("boundary-out" in locations) == (days_after >= 1)


def test_objects_are_capped_in_records(settings: Settings) -> None:
    records = [(tweet(i, "x"), tweet(i, "x").to_json_bytes(), at(DAY1, 1, i), 0) for i in range(7)]
    sent = produce(settings, records)

    result = archive(settings, progress=False, max_records_per_object=3)

    assert (result.objects_written, result.records_archived) == (3, 7)
    assert (
        set(s3_objects(settings))
        == expected_keys(sent, cap=3)
        == {
            f"tweets/ingest_date=2024-03-01/partition=0/offsets-{a:012d}-{b:012d}.jsonl.gz"
            for a, b in ((0, 2), (3, 5), (6, 6))
        }
    )


def test_a_run_refuses_while_another_holds_the_lock(settings: Settings) -> None:
    produce(settings)

    with batch_lock(settings, wait_seconds=0), pytest.raises(BatchBusyError, match="Another"):
        run_batch(settings, progress=False, lock_wait_seconds=1)

    assert s3_objects(settings) == {}  # the refused run did nothing
    assert query(settings, "SELECT COUNT(*) FROM raw_tweets") == [(0,)]


def test_concurrent_runs_wait_for_each_other_and_never_corrupt(settings: Settings) -> None:
    sent = produce(settings)
    results: list[object] = []

    def run() -> None:
        try:
            results.append(run_batch(settings, progress=False, lock_wait_seconds=120))
        except BatchBusyError as exc:  # refusing is allowed; corrupting is not
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)

    summaries = [r for r in results if not isinstance(r, BatchBusyError)]
    assert len(results) == 3 and summaries
    assert sum(s.records_archived for s in summaries) == len(sent)
    assert sum(s.rows_loaded for s in summaries) == len(valid_deliveries(sent))
    assert set(s3_objects(settings)) == expected_keys(sent)
    assert [(p, o) for p, o, *_ in raw_deliveries(settings)] == valid_deliveries(sent)
    pd.testing.assert_frame_equal(current_view(settings), expected_view(sent, CUTOFF))
    assert len(query(settings, "SELECT DISTINCT run_id FROM batch_view")) == 1


def test_an_empty_topic_cuts_at_today_and_yields_an_empty_view(settings: Settings) -> None:
    assert pipeline_day(settings) == datetime.now(UTC).date()

    summary = run_batch(settings, progress=False)

    assert (summary.records_archived, summary.rows_loaded, summary.locations) == (0, 0, 0)
    assert summary.tweets_in_view == 0
    assert query(settings, "SELECT run_id, cutoff_day FROM batch_meta") == [
        (summary.run_id, summary.cutoff)
    ]
    assert "0 distinct tweets" in str(summary)
