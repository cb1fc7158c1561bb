"""The Redshift forms of the speed layer's writes, run on PostgreSQL: they add, and they skip.

Redshift has no ``ON CONFLICT``, so `warehouse.speed_upsert_sql` and
`warehouse.quarantine_insert_sql` have a second form for it, through a staging table. No
Redshift runs here, but PostgreSQL runs those very statements once Redshift's ``GETDATE()`` is
read as ``now()``. What the dialect's unit tests cannot see is the behaviour: sums written twice
add up, each key keeps one row, and a record quarantined twice is recorded once.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, date, datetime

import pytest

from lambda_demo import view
from lambda_demo.clients import warehouse
from lambda_demo.clients.dialect import WORDS
from lambda_demo.settings import Settings

pytestmark = pytest.mark.integration

DAY = date(2026, 11, 3)
NEXT_DAY = date(2026, 11, 4)


def _on_postgres(statements: list[str]) -> list[str]:
    return [s.replace(WORDS["redshift"].now, WORDS["postgres"].now) for s in statements]


def test_the_redshift_speed_write_adds_to_the_rows_it_meets(settings: Settings) -> None:
    assert view.MEASURE_NAMES == ("tweet_count", "followers_sum", "likes_sum", "retweets_sum")
    micro_batches = [
        [("d", DAY, "Paris", 2, 10, 3, 1), ("d", DAY, "Oslo", 1, 5, 0, 0)],
        [("d", DAY, "Paris", 1, 7, 1, 0), ("d", NEXT_DAY, "Paris", 4, 4, 4, 4)],
    ]
    with contextlib.closing(warehouse.connect(settings)) as conn, conn, conn.cursor() as cur:
        for rows in micro_batches:
            statements = _on_postgres(warehouse.speed_upsert_sql("redshift"))
            warehouse._run(cur, statements, rows, warehouse.speed_row_template())
        cur.execute(
            f"SELECT ingest_day, {', '.join(view.COLUMNS)} FROM speed_view "
            "WHERE deployment = 'd' ORDER BY ingest_day, location"
        )
        assert cur.fetchall() == [
            (DAY, "Oslo", 1, 5, 0, 0),
            (DAY, "Paris", 3, 17, 4, 1),
            (NEXT_DAY, "Paris", 4, 4, 4, 4),
        ]


def test_the_redshift_quarantine_insert_records_a_record_once(settings: Settings) -> None:
    noted = datetime(2026, 11, 3, 9, tzinfo=UTC)
    first = [("speed", 0, 7, noted, "not JSON", b"{oops".hex())]
    again = [*first, ("speed", 1, 2, noted, "no id", None)]
    with contextlib.closing(warehouse.connect(settings)) as conn, conn, conn.cursor() as cur:
        for rows in (first, again):
            statements = _on_postgres(warehouse.quarantine_insert_sql("redshift"))
            warehouse._run(cur, statements, rows, warehouse.quarantine_template("postgres"))
        cur.execute(
            "SELECT kafka_partition, kafka_offset, reason, raw_value FROM quarantine "
            "WHERE layer = 'speed' ORDER BY kafka_partition"
        )
        got = [(p, o, reason, raw and bytes(raw)) for p, o, reason, raw in cur.fetchall()]
    assert got == [(0, 7, "not JSON", b"{oops"), (1, 2, "no id", None)]
