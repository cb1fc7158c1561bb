"""The serving layer on the real stack: CLI output, the D boundary, swaps, safe SQL."""

from __future__ import annotations

import json
import threading
from datetime import date, datetime, timedelta

import pytest
from helpers import DAY0, Delivery, as_dict, expected_view, produce, query, run_cli, tweet

from lambda_demo.batch.run import run_batch
from lambda_demo.clients import warehouse
from lambda_demo.contract import MAX_COUNT
from lambda_demo.errors import LambdaDemoError
from lambda_demo.serving import check, reads
from lambda_demo.settings import Settings
from lambda_demo.speed.run import run_speed

pytestmark = pytest.mark.integration

KEYS_ORDER = ("tweet_count", "followers_sum", "likes_sum", "retweets_sum")
KEYS = {"location", "tweet_count", "followers_sum", "likes_sum", "retweets_sum"}
BIG = MAX_COUNT - 10_000  # near the largest count the contract accepts (likes add to it)
INJECTION = "x'); DROP TABLE raw_tweets; --"
LOCATIONS = [
    "London",
    " London",
    'Paris; "FR"',
    "a,b\nc",
    "Zürich 🇨🇭",
    INJECTION,
    "100% %s",
]


def _day(offset: int) -> date:
    return (DAY0 + timedelta(days=offset)).date()


def _stream() -> list[Delivery]:
    """Tweets over three days, every location with a distinct likes sum, some duplicates."""
    out: list[Delivery] = []
    ts = DAY0 + timedelta(hours=18)
    next_id = 1
    for round_ in range(3):
        for i, place in enumerate(LOCATIONS):
            ts += timedelta(hours=2, minutes=1)
            likes = (i + 1) * 1000 + round_ + (BIG if i == 2 else 0)
            t = tweet(next_id, place, followers=BIG if i == 0 else i, likes=likes, retweets=i)
            next_id += 1
            out.append(Delivery(ts, t))
            if i % 3 == 0:  # re-delivered minutes later: counts once
                out.append(Delivery(ts + timedelta(minutes=3), t))
    out.append(Delivery(ts + timedelta(minutes=5), garbage=b'{"v":1,"tweet_id":"9"}'))
    out.sort(key=lambda d: d.ts)
    return out


def _loaded(settings: Settings, spark) -> list[Delivery]:
    """Produce the stream, batch with the middle day as D, speed: both parts contribute."""
    deliveries = _stream()
    produce(settings, deliveries)
    run_batch(settings, cutoff=_day(1), progress=False)
    run_speed(settings, once=True)
    parts = reads.totals(settings)
    assert parts.loc["batch", "tweet_count"] > 0
    assert parts.loc["speed", "tweet_count"] > 0
    return deliveries


def test_query_and_check_json(settings: Settings, cli_env: dict[str, str], spark) -> None:
    deliveries = _loaded(settings, spark)
    expected = expected_view(deliveries)
    assert len(expected) == len(LOCATIONS)

    done = run_cli(cli_env, "query", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)  # the whole stdout is ONE JSON document
    assert isinstance(rows, list)
    assert all(set(row) == KEYS for row in rows)
    for row in rows:
        for key in KEYS - {"location"}:
            assert type(row[key]) is int, (key, row[key])
    assert {r["location"]: [r[k] for k in KEYS_ORDER] for r in rows} == expected
    assert len(rows) == len(expected)

    done = run_cli(cli_env, "query", "--top", "3", "--by", "likes_sum", "--json")
    assert done.returncode == 0, done.stderr
    top = json.loads(done.stdout)
    by_likes = sorted(expected.items(), key=lambda kv: kv[1][2], reverse=True)[:3]
    assert [r["location"] for r in top] == [location for location, _ in by_likes]
    assert [r["likes_sum"] for r in top] == [row[2] for _, row in by_likes]
    assert all(set(row) == KEYS for row in top)

    done = run_cli(cli_env, "check", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert report["mismatches"] == []
    assert report["tweets"] == sum(row[0] for row in expected.values())

    # Corrupt one speed row that serving reads (day >= D): check must notice and fail.
    conn = warehouse.connect(settings)
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE speed_view SET likes_sum = likes_sum + 1 WHERE location = %s "
            "AND ingest_day = (SELECT MAX(ingest_day) FROM speed_view WHERE location = %s)",
            ('Paris; "FR"', 'Paris; "FR"'),
        )
        assert cur.rowcount == 1
    conn.close()
    done = run_cli(cli_env, "check", "--json")
    assert done.returncode != 0
    report = json.loads(done.stdout)
    assert report["ok"] is False
    assert [m["location"] for m in report["mismatches"]] == ['Paris; "FR"']
    mismatch = report["mismatches"][0]
    assert mismatch["likes_sum_serving"] == mismatch["likes_sum_expected"] + 1


def _at(day: int, hour: int, minute: int, second: int, ms: int) -> datetime:
    return DAY0 + timedelta(days=day, hours=hour, minutes=minute, seconds=second, milliseconds=ms)


def test_boundary_counts_once_and_hands_over(settings: Settings, spark) -> None:
    """D-1 23:59:59.999 and D 00:00:00.000 each count once, before and after a hand-over."""
    before = Delivery(_at(0, 23, 59, 59, 999), tweet(1, "before", followers=5, likes=1))
    on_d = Delivery(_at(1, 0, 0, 0, 0), tweet(2, "on D", followers=7, likes=2))
    last_d = Delivery(_at(1, 23, 59, 59, 999), tweet(3, "end of D", followers=11, likes=3))
    after = Delivery(_at(2, 0, 0, 0, 0), tweet(4, "D+1", followers=13, likes=4))
    # The same tweet again across each midnight: first delivery wins, on its own day.
    deliveries = [
        before,
        Delivery(on_d.ts, before.tweet),
        on_d,
        last_d,
        after,
        Delivery(after.ts, last_d.tweet),
    ]
    produce(settings, deliveries)
    expected = {
        "before": [1, 5, 1, 0],
        "on D": [1, 7, 2, 0],
        "end of D": [1, 11, 3, 0],
        "D+1": [1, 13, 4, 0],
    }
    assert expected_view(deliveries) == expected

    run_speed(settings, once=True)
    assert as_dict(reads.serving_view(settings)) == expected  # speed alone

    run_batch(settings, cutoff=_day(1), progress=False)
    assert reads.batch_cutoff(settings) == _day(1).isoformat()
    assert as_dict(reads.serving_view(settings)) == expected
    parts = reads.totals(settings)
    assert parts.loc["batch", "tweet_count"] == 1  # D-1 only
    assert parts.loc["speed", "tweet_count"] == 3  # D and D+1

    run_speed(settings, once=True)  # nothing new: idempotent
    assert as_dict(reads.serving_view(settings)) == expected

    run_batch(settings, cutoff=_day(2), progress=False)  # the hand-over of day D
    assert reads.batch_cutoff(settings) == _day(2).isoformat()
    assert as_dict(reads.serving_view(settings)) == expected
    parts = reads.totals(settings)
    assert parts.loc["batch", "tweet_count"] == 3
    assert parts.loc["speed", "tweet_count"] == 1
    assert check.check(settings).ok


def test_no_gap_no_double_count_while_batch_swaps(settings: Settings, spark) -> None:
    deliveries = _stream()
    produce(settings, deliveries)
    run_speed(settings, once=True)
    expected = expected_view(deliveries)
    total = sum(row[0] for row in expected.values())

    errors: list[BaseException] = []

    def batches() -> None:
        try:
            for cutoff in (_day(1), _day(1), _day(1), _day(2)):
                run_batch(settings, cutoff=cutoff, progress=False)
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)

    worker = threading.Thread(target=batches)
    worker.start()
    snapshots = 0
    cutoffs: set[str | None] = set()
    try:
        while worker.is_alive():
            parts = reads.totals(settings)
            assert int(parts["tweet_count"].sum()) == total
            frame = reads.serving_view(settings)
            assert int(frame["tweet_count"].sum()) == total
            assert as_dict(frame) == expected
            cutoffs.add(reads.batch_cutoff(settings))
            snapshots += 1
    finally:
        worker.join()
    assert not errors, errors
    assert snapshots >= 3
    assert cutoffs & {_day(1).isoformat(), _day(2).isoformat()}
    assert reads.batch_cutoff(settings) == _day(2).isoformat()
    assert as_dict(reads.serving_view(settings)) == expected
    assert int(reads.totals(settings).loc["batch", "tweet_count"]) > 0


def test_top_validates_by_and_location_is_a_parameter(settings: Settings, spark) -> None:
    deliveries = _loaded(settings, spark)
    expected = expected_view(deliveries)

    for bad in ("nope", "location", "likes_sum; DROP TABLE raw_tweets", "LIKES_SUM", ""):
        with pytest.raises(LambdaDemoError):
            reads.top(3, by=bad, settings=settings)

    top = reads.top(2, by="followers_sum", settings=settings)
    assert list(top.columns) == ["location", *KEYS_ORDER]
    assert len(top) == 2
    assert top["followers_sum"].iloc[0] == max(row[1] for row in expected.values())

    for place in (INJECTION, "100% %s", 'Paris; "FR"', "a,b\nc"):
        assert as_dict(reads.location(place, settings=settings)) == {place: expected[place]}
    assert reads.location("x'", settings=settings).empty
    assert reads.location("' OR '1'='1", settings=settings).empty

    assert query(settings, "SELECT COUNT(*) FROM raw_tweets")[0][0] > 0  # the table survived
    assert as_dict(reads.serving_view(settings)) == expected


def test_reads_survive_a_dropped_connection(settings: Settings) -> None:
    """Serving reuses one connection; if the server drops it, the next read reconnects."""
    warehouse.ensure_schema(settings)
    first = warehouse.fetch_frame("SELECT pg_backend_pid() AS pid", settings=settings)
    pid = int(first["pid"].iloc[0])
    again = warehouse.fetch_frame("SELECT pg_backend_pid() AS pid", settings=settings)
    assert int(again["pid"].iloc[0]) == pid  # reused, not reopened
    conn = warehouse.connect(settings, autocommit=True)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    conn.close()
    after = warehouse.fetch_frame("SELECT pg_backend_pid() AS pid", settings=settings)
    assert int(after["pid"].iloc[0]) != pid
