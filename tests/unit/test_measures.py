"""Every list of measures or of the fields they read is derived from ``view.MEASURES``.

The warehouse's tables, the loader's columns, the speed layer's schema and what its workers
extract, ``check``'s columns and the batch SQL must all follow the view: a second,
hand-written copy of any of them would let a new measure reach some layers and not others.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from helpers import add_hashtags_measure

import lambda_demo
from lambda_demo import view
from lambda_demo.batch import loader
from lambda_demo.batch.recompute import batch_view_sql
from lambda_demo.clients import warehouse
from lambda_demo.contract import FlatTweet
from lambda_demo.serving import check
from lambda_demo.speed import stream

TWEET = FlatTweet(
    "9", "2024-03-01T00:00:00.000Z", "1", "Lisbon", 4, 5, 6, ("a", "b", "c"), "pt", "t"
)
INGEST_MS = 1709251200000


def _table_columns(ddl: str, table: str) -> list[str]:
    """The column names of ``CREATE TABLE IF NOT EXISTS table (...)``, in order."""
    body = re.search(rf"CREATE TABLE IF NOT EXISTS {table} \((.*?)\n\);", ddl, re.DOTALL)
    assert body is not None, table
    lines = [line.strip() for line in body.group(1).strip().splitlines()]
    return [line.split()[0] for line in lines if not line.startswith("PRIMARY KEY")]


def _schema_columns(schema: str) -> list[tuple[str, str]]:
    return [tuple(part.split()) for part in schema.split(", ")]  # type: ignore[misc]


def _validated(fields: tuple[str, ...]) -> pd.DataFrame:
    """What the speed layer's workers make of one valid Kafka row, run here without Spark."""
    batch = pd.DataFrame(
        {
            "partition": [0],
            "offset": [7],
            "ingest_ms": [INGEST_MS],
            "value": [TWEET.to_json_bytes()],
        }
    )
    (out,) = stream.validator(fields)(iter([batch]))
    return out


def _archived() -> bytes:
    line = {"partition": 1, "offset": 3, "timestamp_ms": INGEST_MS, "key": None,
            "value": TWEET.to_json_bytes().decode()}  # fmt: skip
    return json.dumps(line).encode() + b"\n"


def test_every_field_a_measure_reads_is_an_integer_of_the_contract() -> None:
    # Integers the contract bounds (contract.MAX_COUNT): the sums are exact in every layer.
    types = {f.name: f.type for f in dataclasses.fields(FlatTweet)}
    assert view.FIELDS_READ == ("followers_count", "like_count", "retweet_count")
    assert all(types[name] == "int" for name in view.FIELDS_READ)


def test_the_tables_have_a_column_per_field_read_and_per_measure() -> None:
    ddl = warehouse.tables_ddl()
    raw = _table_columns(ddl, "raw_tweets")
    assert raw == list(loader.raw_columns()) == list(warehouse.raw_tweets_columns())
    counts = {f.name for f in dataclasses.fields(FlatTweet) if f.type == "int"}
    assert [c for c in raw if c in counts] == list(view.FIELDS_READ)
    assert _table_columns(ddl, "batch_view") == ["run_id", *view.COLUMNS]
    assert _table_columns(ddl, "speed_view") == [
        "deployment",
        "ingest_day",
        *view.COLUMNS,
        "updated_at",
    ]
    for name in view.MEASURE_NAMES:
        assert f"{name} BIGINT NOT NULL" in ddl


def test_the_speed_workers_output_exactly_the_schema_the_driver_declares() -> None:
    schema = _schema_columns(stream.parsed_schema(view.FIELDS_READ))
    out = _validated(view.FIELDS_READ)
    assert list(out.columns) == [name for name, _ in schema]
    assert [name for name, kind in schema[7:]] == list(view.FIELDS_READ)
    assert all(kind == "long" for _, kind in schema[7:])
    for name in view.FIELDS_READ:
        assert out[name].dtype == "Int64"  # exact, never float64
        assert out.loc[0, name] == getattr(TWEET, name)


def test_check_reads_the_key_and_every_field_read() -> None:
    record = SimpleNamespace(
        value=TWEET.to_json_bytes(), timestamp=INGEST_MS, partition=2, offset=5
    )
    row = check._valid_row(record, view.FIELDS_READ)  # type: ignore[arg-type]
    assert row == ("9", INGEST_MS, 2, 5, "Lisbon", 4, 5, 6)


def test_a_measure_added_at_run_time_reaches_every_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    add_hashtags_measure(monkeypatch)
    assert view.MEASURE_NAMES[-1] == "hashtags_sum"
    assert view.COLUMNS[-1] == "hashtags_sum"
    assert view.FIELDS_READ[-1] == "hashtag_count"

    ddl = warehouse.tables_ddl()
    assert "hashtag_count" in _table_columns(ddl, "raw_tweets")
    assert "hashtags_sum" in _table_columns(ddl, "batch_view")
    assert "hashtags_sum" in _table_columns(ddl, "speed_view")
    assert "hashtags_sum" in warehouse.views_ddl()

    (row,), _ = loader.read_object(_archived(), object_key="k")
    assert dict(zip(loader.raw_columns(), row, strict=True))["hashtag_count"] == 3

    sql = " ".join(batch_view_sql().split())
    assert "CAST(SUM(hashtag_count) AS BIGINT) AS hashtags_sum" in sql
    assert (
        "SELECT location, ingest_day, followers_count, like_count, retweet_count, "
        "hashtag_count, ROW_NUMBER()" in sql
    )

    assert ("hashtag_count", "long") in _schema_columns(stream.parsed_schema(view.FIELDS_READ))
    assert _validated(view.FIELDS_READ).loc[0, "hashtag_count"] == 3

    record = SimpleNamespace(
        value=TWEET.to_json_bytes(), timestamp=INGEST_MS, partition=0, offset=0
    )
    assert check._valid_row(record, view.FIELDS_READ)[-1] == 3  # type: ignore[arg-type]
    tweets = pd.DataFrame({"location": ["a", "a"], **{f: [1, 2] for f in view.FIELDS_READ}})
    assert view.pandas_aggregate(tweets)["hashtags_sum"].tolist() == [3]


SUMS = [m for m in view.MEASURES if m.reads is not None]
ALLOWED = {
    Path("view.py"): "the definition",
    Path("contract.py"): "the fields, parsed and bounded",
    Path("ingestion", "sample.py"): "writes records in the X API's layout, counts included",
    Path("tutorial", "late_data.py"): "scripts records in the X API's layout, likes included",
    Path("tutorial", "grading"): "exercise scenarios and answers, written as a learner would",
}


@pytest.mark.parametrize("word", [w for m in SUMS for w in (m.name, m.reads)])
def test_no_other_module_names_a_measure_or_the_field_it_reads(word: str) -> None:
    """A second copy of these names (a schema, a column list) would be a list to keep in step
    with the view by hand: derive it from ``view`` instead."""
    package = Path(lambda_demo.__file__).parent
    pattern = re.compile(rf"\b{word}\b")
    found = [
        str(path.relative_to(package))
        for path in sorted(package.rglob("*.py"))
        if not {path.relative_to(package), *path.relative_to(package).parents} & ALLOWED.keys()
        and pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert found == []
