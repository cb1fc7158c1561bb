"""The batch layer's generated SQL and bulk-load encodings, checked without a warehouse.

Redshift's COPY cannot run here, so its exact text is pinned; the CSV encoding is read back
with the rules PostgreSQL applies to ``FORMAT csv`` (NULL is only the unquoted empty field).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from types import SimpleNamespace

import pytest

from lambda_demo import view
from lambda_demo.batch.archiver import _ingest_date, object_key, parse_object_key
from lambda_demo.batch.loader import (
    csv_rows,
    raw_columns,
    read_object,
    redshift_copy_sql,
    redshift_staging_lines,
)
from lambda_demo.batch.recompute import batch_view_sql, new_run_id
from lambda_demo.contract import FlatTweet
from lambda_demo.errors import SettingsError

ROLE = "arn:aws:iam::123456789012:role/lambda-demo-copy"
KEY = "staging/raw_tweets/tweets/ingest_date=2024-03-01/partition=0/offsets-000000000000-000000000009.jsonl.gz"  # noqa: E501
TS = datetime(2024, 3, 1, 23, 59, 59, 999000, tzinfo=UTC)
ROW = (
    "007",
    TS,
    TS.date(),
    2,
    41,
    "2024-03-01T23:59:00.000Z",
    "",
    'a "b", c;\nd \\. 🌍',
    10,
    0,
    3,
    None,
    "tweets/x",
)


def test_redshift_copy_sql_is_exact() -> None:
    got = redshift_copy_sql(
        table="raw_tweets", columns=raw_columns(), bucket="lambda-demo", key=KEY, iam_role=ROLE
    )
    columns = ", ".join(f'"{name}"' for name in raw_columns())
    assert got == (
        f"COPY \"raw_tweets\" ({columns}) FROM 's3://lambda-demo/{KEY}' "
        f"IAM_ROLE '{ROLE}' FORMAT AS JSON 'auto' GZIP TIMEFORMAT 'epochmillisecs' "
        "DATEFORMAT 'YYYY-MM-DD'"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("iam_role", "arn:aws:iam::123456789012:role/x' ; DROP TABLE raw_tweets; --"),
        ("iam_role", "not-an-arn"),
        ("iam_role", None),
        ("bucket", "Bad_Bucket"),
        ("bucket", "b'x"),
        ("key", "tweets/it's.jsonl.gz"),
        ("key", "tweets/back\\slash"),
        ("key", "tweets/new\nline"),
        ("table", 'raw_tweets"; DROP'),
    ],
)
def test_redshift_copy_sql_refuses_unsafe_names_and_literals(field: str, value: str) -> None:
    args = {
        "table": "raw_tweets",
        "columns": raw_columns(),
        "bucket": "lambda-demo",
        "key": KEY,
        "iam_role": ROLE,
    }
    args[field] = value
    with pytest.raises(SettingsError):
        redshift_copy_sql(**args)


def test_redshift_staging_lines_are_named_like_the_columns() -> None:
    line, end = redshift_staging_lines([ROW]).split(b"\n")
    assert end == b""
    record = json.loads(line)
    assert list(record) == list(raw_columns())
    assert record["tweet_id"] == "007"  # identity is the digit string
    assert record["ingest_ts"] == 1709337599999  # epoch milliseconds
    assert record["ingest_day"] == "2024-03-01"
    assert record["location"] == ROW[7]
    assert record["lang"] is None


def _parse_pg_csv(text: str) -> list[list[str | None]]:
    """A reader for PostgreSQL's CSV rules: quoted fields are literal, unquoted empty is NULL."""
    rows: list[list[str | None]] = []
    field_re = re.compile(r'"((?:[^"]|"")*)"|([^,\n]*)')
    pos = 0
    while pos < len(text):
        row: list[str | None] = []
        while True:
            match = field_re.match(text, pos)
            assert match is not None
            quoted, bare = match.groups()
            row.append(quoted.replace('""', '"') if quoted is not None else (bare or None))
            pos = match.end()
            if text[pos] == ",":
                pos += 1
                continue
            assert text[pos] == "\n"
            pos += 1
            break
        rows.append(row)
    return rows


def test_csv_rows_keep_empty_strings_nulls_and_special_characters_apart() -> None:
    (row,) = _parse_pg_csv(csv_rows([ROW]))
    assert row == [
        "007",
        "2024-03-01T23:59:59.999000+00:00",
        "2024-03-01",
        "2",
        "41",
        "2024-03-01T23:59:00.000Z",
        "",  # an empty author_id stays an empty string
        'a "b", c;\nd \\. 🌍',
        "10",
        "0",
        "3",
        None,  # lang None is NULL
        "tweets/x",
    ]


def test_batch_view_sql_dedups_portably_before_the_cutoff() -> None:
    text = " ".join(batch_view_sql().split())
    assert "DISTINCT ON" not in text  # not in Redshift
    assert (
        "ROW_NUMBER() OVER ( PARTITION BY tweet_id "
        "ORDER BY ingest_ts, kafka_partition, kafka_offset ) AS delivery"
    ) in text
    assert "WHERE delivery = 1 AND ingest_day < %(cutoff)s GROUP BY location" in text
    assert view.sql_select_list() in text
    assert f"INSERT INTO batch_view (run_id, location, {', '.join(view.MEASURE_NAMES)})" in text


def test_object_keys_round_trip_and_sort_by_offset() -> None:
    key = object_key(ingest_date=date(2024, 3, 1), partition=2, start=0, end=49_999)
    assert key == (
        "tweets/ingest_date=2024-03-01/partition=2/offsets-000000000000-000000049999.jsonl.gz"
    )
    parsed = parse_object_key(key)
    assert parsed is not None
    assert (parsed.ingest_date, parsed.partition, parsed.start, parsed.end) == (
        date(2024, 3, 1),
        2,
        0,
        49_999,
    )
    later = object_key(ingest_date=date(2024, 3, 1), partition=2, start=50_000, end=50_001)
    assert sorted([later, key]) == [key, later]
    assert parse_object_key("tweets/ingest_date=2024-03-01/partition=2/other.jsonl.gz") is None


def test_read_object_splits_valid_rows_from_quarantine() -> None:
    flat = FlatTweet("9", "2024-03-01T00:00:00Z", "1", "x\u2028y", 1, 2, 3, (), None, "t")
    lines = [
        {"partition": 0, "offset": 5, "timestamp_ms": 1709251200000, "key": "9",
         "value": flat.to_json_bytes().decode()},
        {"partition": 0, "offset": 6, "timestamp_ms": 1709251200001, "key": None,
         "value_b64": "//4="},
        {"partition": 0, "offset": 7, "timestamp_ms": 1709251200002, "key": None, "value": None},
    ]  # fmt: skip
    # U+2028 left unescaped, as the archiver writes it: it must not split the line.
    data = b"".join(json.dumps(line, ensure_ascii=False).encode() + b"\n" for line in lines)

    rows, rejected = read_object(data, object_key="k")

    assert [(r[0], r[3], r[4], r[7], r[12]) for r in rows] == [("9", 0, 5, "x\u2028y", "k")]
    assert [(q.offset, q.reason, q.raw_value) for q in rejected] == [
        (6, "not_utf8", b"\xff\xfe"),
        (7, "null_value", None),
    ]


# Written out by hand, not taken from lambda_demo.contract.
FIRST_TWEET_MS = 1_142_899_200_000  # 2006-03-21T00:00:00.000Z
LAST_INGEST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
YEAR_10000_MS = 253_402_300_800_000  # 10000-01-01T00:00:00.000Z
MS_1990 = 631_152_000_000  # 1990-01-01T00:00:00.000Z


@pytest.mark.parametrize(
    ("ms", "day"),
    [
        (1709337599999, date(2024, 3, 1)),
        (1709337600000, date(2024, 3, 2)),
        (FIRST_TWEET_MS, date(2006, 3, 21)),
        (LAST_INGEST_MS, date(9999, 12, 31)),
        # Timestamps no tweet can have are filed under the nearest day one can.
        (YEAR_10000_MS, date(9999, 12, 31)),
        (2**63 - 1, date(9999, 12, 31)),
        (MS_1990, date(2006, 3, 21)),
        (FIRST_TWEET_MS - 1, date(2006, 3, 21)),
        (0, date(2006, 3, 21)),
        (-1, date(2006, 3, 21)),
        (-(2**63), date(2006, 3, 21)),
    ],
)
def test_archiver_files_every_timestamp_under_a_day_a_tweet_can_have(ms: int, day: date) -> None:
    assert _ingest_date(SimpleNamespace(timestamp=ms)) == day  # type: ignore[arg-type]


def _archive_line(offset: int, ms: int, value: bytes | None) -> bytes:
    line = {"partition": 1, "offset": offset, "timestamp_ms": ms, "key": None,
            "value": None if value is None else value.decode()}  # fmt: skip
    return json.dumps(line, ensure_ascii=False).encode() + b"\n"


def test_read_object_quarantines_a_year_10000_record_beside_a_normal_one() -> None:
    flat = FlatTweet("9", "2024-03-01T00:00:00.000Z", "1", "Lisbon", 4, 5, 6, (), "pt", "t")
    value = flat.to_json_bytes()
    data = _archive_line(10, 1709251200000, value) + _archive_line(11, YEAR_10000_MS, value)

    rows, rejected = read_object(data, object_key="k")

    assert rows == [
        (
            "9",
            datetime(2024, 3, 1, tzinfo=UTC),
            date(2024, 3, 1),
            1,
            10,
            "2024-03-01T00:00:00.000Z",
            "1",
            "Lisbon",
            4,
            5,
            6,
            "pt",
            "k",
        )
    ]
    assert [(q.partition, q.offset, q.ingest_ts, q.reason, q.raw_value) for q in rejected] == [
        (1, 11, None, "bad_ingest_time", value)
    ]


@pytest.mark.parametrize(
    ("ms", "value", "expected"),
    [
        (LAST_INGEST_MS, b"{", ("not_json", datetime(9999, 12, 31, 23, 59, 59, 999000, UTC))),
        (FIRST_TWEET_MS, None, ("null_value", datetime(2006, 3, 21, tzinfo=UTC))),
        (FIRST_TWEET_MS - 1, b"{", ("bad_ingest_time", None)),
        (LAST_INGEST_MS + 1, None, ("bad_ingest_time", None)),
        (MS_1990, b"{", ("bad_ingest_time", None)),
        (-1, b"{", ("bad_ingest_time", None)),
    ],
)
def test_read_object_quarantine_reason_and_ingest_ts(
    ms: int, value: bytes | None, expected: tuple[str, datetime | None]
) -> None:
    rows, rejected = read_object(_archive_line(3, ms, value), object_key="k")
    assert rows == []
    assert [(q.reason, q.ingest_ts) for q in rejected] == [expected]


@pytest.mark.parametrize(
    ("ms", "ingest_ts"),
    [
        (FIRST_TWEET_MS, datetime(2006, 3, 21, tzinfo=UTC)),
        (LAST_INGEST_MS, datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
    ],
)
def test_read_object_loads_records_at_the_ingest_bounds(ms: int, ingest_ts: datetime) -> None:
    flat = FlatTweet("9", "2024-03-01T00:00:00.000Z", "1", "Lisbon", 4, 5, 6, (), "pt", "t")
    rows, rejected = read_object(_archive_line(3, ms, flat.to_json_bytes()), object_key="k")
    assert rejected == []
    assert [(r[0], r[1], r[2]) for r in rows] == [("9", ingest_ts, ingest_ts.date())]


def test_run_ids_sort_by_time_and_are_unique() -> None:
    now = datetime(2024, 3, 4, 5, 6, 7, tzinfo=UTC)
    first, second = new_run_id(now), new_run_id(now)
    assert re.fullmatch(r"20240304T050607-[0-9a-f]{8}", first)
    assert first != second
