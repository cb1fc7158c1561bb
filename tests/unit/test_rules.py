"""Each shared rule is defined once, and every layer that applies it renders that definition.

The rules: which delivery of a tweet counts (first delivery wins), a record's day (the UTC day
of its Kafka ingest time), which layer serves a day (the split at the cutoff D), how a range
of a partition is read (one reader, one timeout policy), how an instant is written (one UTC
format) and how the code waits (one ``wait_until``).

Two kinds of test keep them single. *Agreement* tests run every rendering of a rule on the
same cases (the batch SQL in SQLite, ``check``'s pandas, the Python predicate) against
expectations written out by hand, so a rendering edited on its own fails. *Single-copy* tests
scan the package for the hand-written forms a second copy would take.
"""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from helpers import FakeTime

from lambda_demo import contract, view
from lambda_demo.batch import archiver, recompute
from lambda_demo.batch.loader import raw_columns, read_object
from lambda_demo.clients import kafka_io, warehouse
from lambda_demo.contract import (
    FIRST_DELIVERY_ORDER,
    INGEST_DAY_ZONE,
    DeliveryColumns,
    FlatTweet,
    ingest_day,
    ingest_day_of,
    served_by_batch,
    sql_batch_days,
    sql_speed_days,
)
from lambda_demo.errors import LambdaDemoError
from lambda_demo.ingestion.clock import format_utc, wait_until
from lambda_demo.ingestion.replay import relabel
from lambda_demo.serving import check, reads
from lambda_demo.settings import Settings

PACKAGE = Path(contract.__file__).resolve().parent

# ---------------------------------------------------------------------------------------------
# First delivery wins: (ingest time, partition, offset)

MS = 1_793_491_200_000  # 2026-11-01T00:00:00.000Z
DAY_MS = 86_400_000

# (tweet id, ingest ms, partition, offset, location): each tweet's winner is "won", and each
# tweet is decided by a different coordinate, listed so the winner is never the first row.
DELIVERIES = [
    ("1", MS + 2000, 0, 0, "lost"),  # later ingest time, smaller partition and offset
    ("1", MS + 1000, 1, 5, "won"),  # ingest time decides
    ("2", MS + 1000, 1, 0, "lost"),
    ("2", MS + 1000, 0, 9, "won"),  # same time: partition decides
    ("3", MS + 1000, 0, 7, "lost"),
    ("3", MS + 1000, 0, 3, "won"),  # same time and partition: offset decides
    ("4", MS + 5000, 2, 1, "single"),
    # Delivered on day 0 and again on day 1: the first delivery (day 0) counts, so a batch
    # run with cutoff day 1 counts it, and one with cutoff day 0 does not.
    ("5", MS + DAY_MS + 10, 0, 20, "lost"),
    ("5", MS + 10, 1, 11, "cut"),
    ("6", MS + DAY_MS + 20, 1, 30, "after"),  # only on day 1
]
DAY0 = date(2026, 11, 1)
FIELDS = list(view.FIELDS_READ)


def _counts(location: str) -> dict[str, int]:
    """Distinct counts per location, so each measure shows which delivery won."""
    return {field: 1 + index + 10 * len(location) for index, field in enumerate(FIELDS)}


def _expected(locations: list[str]) -> dict[str, list[int]]:
    return {
        loc: [1 if m.reads is None else _counts(loc)[m.reads] for m in view.MEASURES]
        for loc in locations
    }


def _as_dict(frame: pd.DataFrame) -> dict[str, list[int]]:
    return {
        row[0]: [int(v) for v in row[1:]] for row in frame[list(view.COLUMNS)].itertuples(False)
    }


def _batch_view_in_sqlite(cutoff: date) -> dict[str, list[int]]:
    """Run the batch recompute's own SQL on the deliveries, in SQLite."""
    db = sqlite3.connect(":memory:")
    raw = ["tweet_id", "ingest_ts", "ingest_day", "kafka_partition", "kafka_offset", "location"]
    db.execute(f"CREATE TABLE raw_tweets ({', '.join(raw + FIELDS)})")
    db.execute(f"CREATE TABLE batch_view (run_id, {', '.join(view.COLUMNS)})")
    for tweet_id, ms, partition, offset, location in DELIVERIES:
        values = [tweet_id, ms, ingest_day(ms).isoformat(), partition, offset, location]
        values += [_counts(location)[f] for f in FIELDS]
        db.execute(f"INSERT INTO raw_tweets VALUES ({', '.join('?' * len(values))})", values)
    statement = re.sub(r"%\((\w+)\)s", r":\1", recompute.batch_view_sql())
    db.execute(statement, {"run_id": "r", "cutoff": cutoff.isoformat()})
    rows = db.execute(f"SELECT {', '.join(view.COLUMNS)} FROM batch_view").fetchall()
    return {row[0]: list(row[1:]) for row in rows}


def _check_view() -> dict[str, list[int]]:
    """Run ``check``'s own recomputation on the same deliveries."""
    frame = pd.DataFrame(
        [
            {
                "tweet_id": tweet_id,
                "timestamp_ms": ms,
                "partition": partition,
                "offset": offset,
                "location": location,
                **_counts(location),
            }
            for tweet_id, ms, partition, offset, location in DELIVERIES
        ]
    )
    return _as_dict(check.recompute(frame))


def test_first_delivery_order_is_ingest_time_then_partition_then_offset() -> None:
    assert FIRST_DELIVERY_ORDER == ("ingest_time", "partition", "offset")
    columns = DeliveryColumns(ingest_time="t", partition="p", offset="o")
    assert columns.first_delivery_order() == ["t", "p", "o"]
    assert columns.sql_order_by() == "t, p, o"


def test_batch_sql_and_check_let_the_same_delivery_win() -> None:
    """If either rendering of the order drifts, a tweet here is counted at another delivery."""
    everything = _expected(["won", "single", "cut", "after"])
    everything["won"] = [3 * v for v in everything["won"]]  # tweets 1, 2 and 3
    assert _check_view() == everything
    assert _batch_view_in_sqlite(cutoff=DAY0 + timedelta(days=2)) == everything


def test_batch_sql_counts_a_tweet_on_the_day_of_its_first_delivery() -> None:
    before_day1 = _batch_view_in_sqlite(cutoff=DAY0 + timedelta(days=1))
    assert "cut" in before_day1 and "after" not in before_day1 and "lost" not in before_day1
    assert "cut" not in _batch_view_in_sqlite(cutoff=DAY0)


def test_both_layers_name_their_columns_for_the_one_order() -> None:
    assert recompute.RAW_DELIVERY.first_delivery_order() == [
        "ingest_ts",
        "kafka_partition",
        "kafka_offset",
    ]
    assert set(recompute.RAW_DELIVERY.first_delivery_order()) <= set(raw_columns())
    assert check.DELIVERY.first_delivery_order() == ["timestamp_ms", "partition", "offset"]
    text = " ".join(recompute.batch_view_sql().split())
    assert f"ORDER BY {recompute.RAW_DELIVERY.sql_order_by()} )" in text


def test_the_speed_layer_points_at_the_rule_it_differs_from() -> None:
    source = (PACKAGE / "speed" / "stream.py").read_text()
    assert "contract.FIRST_DELIVERY_ORDER" in source
    assert "contract.INGEST_DAY_ZONE" in source


# ---------------------------------------------------------------------------------------------
# A record's day: the UTC day of its Kafka ingest timestamp

# Written out by hand, not computed with the code under test.
LAST_MS_OF_2024_03_01 = 1_709_337_599_999
FIRST_MS_OF_2024_03_02 = 1_709_337_600_000
LAST_INGEST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


@pytest.mark.parametrize(
    ("ms", "day"),
    [
        (LAST_MS_OF_2024_03_01, date(2024, 3, 1)),
        (FIRST_MS_OF_2024_03_02, date(2024, 3, 2)),
        (1_142_899_200_000, date(2006, 3, 21)),
        (LAST_INGEST_MS, date(9999, 12, 31)),
    ],
)
def test_ingest_day_is_the_utc_day_of_the_ingest_timestamp(ms: int, day: date) -> None:
    assert ingest_day(ms) == day


def test_ingest_day_of_an_instant_in_another_zone_is_its_utc_day() -> None:
    late_evening_in_new_york = datetime(2024, 3, 1, 20, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert ingest_day_of(late_evening_in_new_york) == date(2024, 3, 2)
    assert INGEST_DAY_ZONE is UTC


@pytest.mark.parametrize("ms", [LAST_MS_OF_2024_03_01, FIRST_MS_OF_2024_03_02, LAST_INGEST_MS])
def test_archiver_and_loader_file_a_record_under_its_ingest_day(ms: int) -> None:
    assert archiver._ingest_date(SimpleNamespace(timestamp=ms)) == ingest_day(ms)  # type: ignore[arg-type]
    flat = FlatTweet("9", "2024-03-01T00:00:00.000Z", "1", "Lisbon", 4, 5, 6, (), "pt", "t")
    line = {"partition": 0, "offset": 1, "timestamp_ms": ms, "key": None,
            "value": flat.to_json_bytes().decode()}  # fmt: skip
    (row,), _ = read_object(json.dumps(line).encode() + b"\n", object_key="k")
    assert row[raw_columns().index("ingest_day")] == ingest_day(ms)


class _FakeBuilder:
    def __init__(self) -> None:
        self.config_seen: dict[str, str] = {}

    def appName(self, _name: str) -> _FakeBuilder:  # pyspark's name
        return self

    def master(self, _master: str) -> _FakeBuilder:
        return self

    def config(self, key: str, value: str) -> _FakeBuilder:
        self.config_seen[key] = value
        return self

    def getOrCreate(self) -> SimpleNamespace:  # pyspark's name
        return SimpleNamespace(sparkContext=SimpleNamespace(setLogLevel=lambda _level: None))


def test_spark_works_in_the_ingest_day_zone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``to_date`` and day windows follow Spark's session time zone: it must be the rule's."""
    from pyspark.sql import SparkSession

    from lambda_demo.clients import spark

    builder = _FakeBuilder()
    monkeypatch.setattr(SparkSession, "builder", builder)
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    monkeypatch.setenv("PYSPARK_PYTHON", "python3")
    spark.get_spark(Settings(home=tmp_path))
    assert builder.config_seen["spark.sql.session.timeZone"] == INGEST_DAY_ZONE.tzname(None)


# ---------------------------------------------------------------------------------------------
# The split at the cutoff D: batch serves days < D, speed serves days >= D


@pytest.mark.parametrize("cutoff", [date(2026, 11, 2), None])
def test_python_and_sql_split_every_day_the_same_way(cutoff: date | None) -> None:
    db = sqlite3.connect(":memory:")
    batch = f"SELECT {sql_batch_days('?', '?')}"
    speed = f"SELECT {sql_speed_days('?', '?')}"
    for offset in range(-2, 3):
        day = date(2026, 11, 2) + timedelta(days=offset)
        params = (day.isoformat(), None if cutoff is None else cutoff.isoformat())
        in_batch = bool(db.execute(batch, params).fetchone()[0])
        in_speed = bool(db.execute(speed, params).fetchone()[0])
        assert in_batch == served_by_batch(day, cutoff)
        assert in_speed != in_batch, "every day is served by exactly one layer"
    assert served_by_batch(date(2026, 11, 1), date(2026, 11, 2))
    assert not served_by_batch(date(2026, 11, 2), date(2026, 11, 2))


def test_batch_run_and_serving_views_render_the_one_split() -> None:
    assert sql_batch_days("ingest_day", "%(cutoff)s") in recompute.batch_view_sql()
    delete = f"DELETE FROM speed_view WHERE {sql_batch_days('ingest_day', '%s')}"
    assert delete == recompute._DELETE_ABSORBED_SPEED_DAYS
    ddl = " ".join((warehouse.tables_ddl() + warehouse.views_ddl()).split())
    assert f"WHERE {sql_speed_days('v.ingest_day', '(SELECT cutoff_day FROM batch_meta)')};" in ddl
    serving = ddl[ddl.index("CREATE OR REPLACE VIEW serving_view") :]
    assert "FROM batch_serving" in serving and "FROM speed_serving" in serving
    assert "batch_view" not in serving and "speed_view" not in serving


def test_totals_splits_exactly_as_the_serving_view_does(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def fetch_frame(query: str, *_args: object, **_kwargs: object) -> pd.DataFrame:
        seen.append(query)
        return pd.DataFrame({"part": ["batch", "speed"], **{m: [0, 0] for m in view.MEASURE_NAMES}})

    monkeypatch.setattr(warehouse, "fetch_frame", fetch_frame)
    reads.totals()
    (query,) = seen
    assert "FROM batch_serving" in query and "FROM speed_serving" in query
    assert "batch_view" not in query and "batch_meta" not in query


# ---------------------------------------------------------------------------------------------
# One reader of offsets [a, b) of a partition, with one timeout policy


class _Record(SimpleNamespace):
    pass


class _FakeConsumer:
    """A partition holding ``offsets`` (gaps are transaction markers), delivered ``per_poll``
    records at a time; ``clock`` advances one second per poll."""

    def __init__(self, offsets: list[int], *, per_poll: int = 2, end: int | None = None) -> None:
        self.offsets = offsets
        self.per_poll = per_poll
        self.end = end if end is not None else (offsets[-1] + 1 if offsets else 0)
        self.position_ = 0
        self.closed = False
        self.now = 0.0
        self.stalled = False

    def assign(self, partitions: list) -> None:
        (self.tp,) = partitions

    def seek(self, _tp: object, offset: int) -> None:
        self.position_ = offset

    def position(self, _tp: object) -> int:
        return self.position_

    def poll(self, **_kwargs: object) -> dict:
        self.now += 1.0
        if self.stalled:
            return {}
        batch = [o for o in self.offsets if o >= self.position_][: self.per_poll]
        if batch:
            self.position_ = batch[-1] + 1
        elif self.position_ < self.end:
            self.position_ = self.end  # only markers left: the position moves past them
        return {self.tp: [_Record(offset=o, timestamp=o * 10) for o in batch]} if batch else {}

    def partitions_for_topic(self, _topic: str) -> set[int]:
        return {1, 0}

    def beginning_offsets(self, partitions: list) -> dict:
        return {tp: 3 * tp.partition for tp in partitions}

    def end_offsets(self, partitions: list) -> dict:
        return {tp: 10 + tp.partition for tp in partitions}

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_kafka(monkeypatch: pytest.MonkeyPatch) -> list[_FakeConsumer]:
    opened: list[_FakeConsumer] = []

    def factory(_settings: object, **_config: object) -> _FakeConsumer:
        consumer = _FakeConsumer(list(range(12)))
        opened.append(consumer)
        monkeypatch.setattr(kafka_io, "time", SimpleNamespace(monotonic=lambda: consumer.now))
        return consumer

    monkeypatch.setattr(kafka_io, "consumer", factory)
    return opened


def test_read_range_yields_exactly_the_range_and_skips_markers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumer = _FakeConsumer([0, 1, 2, 4, 5, 7, 8, 9], end=10)  # 3 and 6 hold markers
    monkeypatch.setattr(kafka_io, "time", SimpleNamespace(monotonic=lambda: consumer.now))
    got = kafka_io.read_range(None, "t", 0, 1, 8, consumer=consumer)  # type: ignore[arg-type]
    assert [r.offset for r in got] == [1, 2, 4, 5, 7]
    assert not consumer.closed, "a consumer passed in stays open"
    assert list(kafka_io.read_range(None, "t", 0, 5, 5, consumer=consumer)) == []  # type: ignore[arg-type]
    # The last offset holds a marker: the read ends without a record, and without waiting.
    marker_last = _FakeConsumer([0, 1], end=3)
    assert [r.offset for r in kafka_io.read_range(None, "t", 0, 2, 3, consumer=marker_last)] == []  # type: ignore[arg-type]


def test_read_range_opens_and_closes_its_own_consumer(fake_kafka: list[_FakeConsumer]) -> None:
    records = list(kafka_io.read_range(None, "t", 0, 9, 12))  # type: ignore[arg-type]
    assert [r.offset for r in records] == [9, 10, 11]
    assert [c.closed for c in fake_kafka] == [True]


def test_read_range_gives_up_in_words_when_no_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = _FakeConsumer(list(range(10)), per_poll=1)
    monkeypatch.setattr(kafka_io, "time", SimpleNamespace(monotonic=lambda: consumer.now))
    records = kafka_io.read_range(None, "tweets", 2, 0, 10, consumer=consumer, timeout_seconds=2.5)  # type: ignore[arg-type]
    assert [next(records).offset for _ in range(6)] == [0, 1, 2, 3, 4, 5]  # 6 s: progress each s
    consumer.stalled = True
    with pytest.raises(LambdaDemoError) as raised:
        next(records)
    message = str(raised.value)
    assert "offsets [0, 10) of tweets[2]" in message and "at offset 6" in message
    assert "2.5 s" in message and "Kafka up" in message


def test_partition_offsets_are_first_and_end_offsets_in_partition_order(
    fake_kafka: list[_FakeConsumer],
) -> None:
    assert kafka_io.partition_offsets(None, "t") == {0: (0, 10), 1: (3, 11)}  # type: ignore[arg-type]
    assert list(kafka_io.partition_offsets(None, "t")) == [0, 1]  # type: ignore[arg-type]
    assert all(c.closed for c in fake_kafka)


# ---------------------------------------------------------------------------------------------
# One UTC format for an instant


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 11, 1, 20, 15, 0, 123999, tzinfo=UTC), "2026-11-01T20:15:00.123Z"),
        (datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC), "0999-01-02T03:04:05.000Z"),
        (datetime(2026, 11, 2, 1, 0, tzinfo=timezone(timedelta(hours=2))),
         "2026-11-01T23:00:00.000Z"),
    ],
)  # fmt: skip
def test_format_utc_writes_milliseconds_in_utc(moment: datetime, text: str) -> None:
    assert format_utc(moment) == text


def test_format_utc_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="naive"):
        format_utc(datetime(2026, 11, 1))


def test_replay_loop_relabels_created_at_in_the_one_format() -> None:
    line = json.dumps({"data": {"id": "1", "created_at": "0999-01-01T00:00:00.000Z"}}).encode()
    moved = json.loads(relabel(line, shift=timedelta(days=1, milliseconds=5)))
    assert moved["data"]["created_at"] == "0999-01-02T00:00:00.005Z"
    naive = json.dumps({"data": {"id": "1", "created_at": "2026-11-01T00:00:00"}}).encode()
    assert relabel(naive, shift=timedelta(days=1)) == naive  # not a tweet: passed unchanged


def test_run_ids_are_the_utc_start_time() -> None:
    local = datetime(2024, 3, 4, 7, 6, 7, tzinfo=timezone(timedelta(hours=2)))
    assert recompute.new_run_id(local).startswith("20240304T050607-")


# ---------------------------------------------------------------------------------------------
# One way to wait


def test_wait_until_returns_the_first_true_value() -> None:
    clock = FakeTime()
    answers = iter([None, 0, "ready"])
    got = wait_until(lambda: next(answers), 10, "x", sleep=clock.sleep, monotonic=clock.monotonic)
    assert got == "ready"
    assert clock.slept == [0.5, 0.5]


class _Busy(LambdaDemoError):
    pass


def test_wait_until_tries_once_then_says_what_it_waited_for() -> None:
    clock = FakeTime()
    calls = []
    with pytest.raises(_Busy) as raised:
        wait_until(
            lambda: calls.append(1),
            0,
            "the lock",
            hint="Try later.",
            error=_Busy,
            sleep=clock.sleep,
            monotonic=clock.monotonic,
        )
    assert calls == [1] and clock.slept == []
    assert str(raised.value) == "Gave up after 0 s waiting for the lock. Try later."


def test_wait_until_gives_up_after_the_timeout() -> None:
    clock = FakeTime()
    with pytest.raises(LambdaDemoError, match="Gave up after 2 s waiting for Kafka"):
        wait_until(
            lambda: False,
            2,
            "Kafka",
            interval_seconds=1,
            sleep=clock.sleep,
            monotonic=clock.monotonic,
        )
    assert clock.slept == [1, 1]


# ---------------------------------------------------------------------------------------------
# No second copy: the hand-written forms a restated rule would take

# Loops that sleep on purpose and are no wait: each checks a process every tick and acts on it.
NOT_YET_FOLDED = {
    "speed/run.py": "time.sleep",  # run_speed's idle loop, until a query stops
    "stack/manager.py": "time.sleep",  # a starting service: exited (its log) or ready
    "stack/process.py": "time.sleep",  # a stopping process: reaped, then SIGKILL
}

SECOND_COPIES = {
    # First delivery wins: only `DeliveryColumns.first_delivery_order` lists the coordinates.
    "dedup order": re.compile(
        r"ingest_ts\s*,\s*kafka_partition|\[\s*[\"']timestamp_ms[\"']\s*,\s*[\"']partition[\"']"
    ),
    # The day: only contract.ingest_day / ingest_day_of turn an instant into a day.
    "ingest day": re.compile(
        r"from_millis\([^()]*\)\.date\(\)|\.astimezone\(UTC\)\.date\(\)|ingest_ts\.date\(\)"
        r"|[\"']spark\.sql\.session\.timeZone[\"']\s*,\s*[\"']"
    ),
    # The split: only contract.sql_batch_days / sql_speed_days compare a day with D.
    "cutoff split": re.compile(r"ingest_day\s*(<|>|<=|>=)\s*(%|\(|COALESCE|DATE)"),
    # Only the batch_serving view (clients/warehouse.py) picks the current run.
    "current run": re.compile(r"run_id\s*=\s*\(\s*SELECT run_id"),
    # Reading Kafka by offset: only clients/kafka_io.read_range assigns, seeks and polls.
    "kafka reader": re.compile(r"\.assign\(\[|\.seek\(\w+,|\.seek_to_\w+\(|\.poll\(timeout_ms"),
    "time.sleep": re.compile(r"\btime\.sleep\("),
    "strftime": re.compile(r"strftime\(|\{[^{}]*:%[YmdHMS]"),
}
DEFINED_IN = {"kafka reader": "clients/kafka_io.py", "current run": "clients/warehouse.py"}
# The graded exercises' reference answers and hints state the rules the way a learner writes
# them, in SQL; the grader checks every answer against the contract's own definitions.
WRITTEN_FOR_LEARNERS = {
    f"tutorial/grading/{name}.py": {"dedup order", "cutoff split"}
    for name in ("dedup_then_cut", "serving_merge")
}


def test_no_module_restates_a_shared_rule() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        text = path.read_text()
        for rule, pattern in SECOND_COPIES.items():
            if DEFINED_IN.get(rule) == name or NOT_YET_FOLDED.get(name) == rule:
                continue
            if rule in WRITTEN_FOR_LEARNERS.get(name, set()):
                continue
            found += [f"{name}: {rule}: {m.group(0)!r}" for m in pattern.finditer(text)]
    assert found == []


def test_the_single_copy_scan_finds_what_it_looks_for() -> None:
    planted = {
        "dedup order": 'sort_values(["timestamp_ms", "partition", "offset"])',
        "ingest day": "from_millis(ms).date()",
        "cutoff split": "WHERE ingest_day < %(cutoff)s",
        "current run": "WHERE run_id = (SELECT run_id FROM batch_meta)",
        "kafka reader": "consumer.poll(timeout_ms=1000)",
        "time.sleep": "time.sleep(0.5)",
        "strftime": 'f"{moment:%Y%m%d}"',
    }
    assert {rule for rule, text in planted.items() if SECOND_COPIES[rule].search(text)} == set(
        SECOND_COPIES
    )
