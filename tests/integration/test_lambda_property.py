"""The Lambda property: whatever the order of produce, speed and batch runs, serving is exact.

Hypothesis generates a stream over 2-4 days (duplicates, also across midnight and with
edited content; malformed records, some carrying a real tweet's id; awkward locations;
counts at the contract's bound, 2**31 - 1), cuts it into 2-4 chunks and, per chunk, an
interleaving of "produce the chunk", ``run_speed(once=True)`` and
``run_batch(cutoff=<day of the newest produced record>)``.
Whenever the speed layer has caught up, the serving view must equal both ``check``'s
recomputation from Kafka and the independent expectation of ``tests/helpers``. After every
step, caught up or not, the speed layer holds no day the batch layer has absorbed.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from datetime import date, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from helpers import (
    DAY0,
    Delivery,
    as_dict,
    expected_by_day,
    expected_view,
    isolated_settings,
    produce,
    ready,
    tweet,
)
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from lambda_demo.batch.run import run_batch
from lambda_demo.clients import warehouse
from lambda_demo.contract import MAX_COUNT
from lambda_demo.serving import check, reads
from lambda_demo.settings import Settings
from lambda_demo.speed.run import run_speed

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000
MAX_SPEED_RUNS = 5  # per example, including the final catch-up: Spark runs dominate the time
BIG = [MAX_COUNT, MAX_COUNT - 1, 10**9 + 7]  # the largest counts the contract accepts

TRICKY = [
    "London",
    " London",
    "London ",
    "London\t",
    "\u00a0London",
    "LONDON",
    "",
    "   ",
    "(unknown)",
    'Paris; "FR"',
    "a,b\nc",
    "line\r\nbreak",
    "\u2028sep",
    "Zürich 🇨🇭",
    "👩‍👩‍👧 family",
    "東京",
    "back\\slash",
    "x'); DROP TABLE raw_tweets; --",
]
LOCATION = st.one_of(
    st.sampled_from(TRICKY),
    st.text(
        st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
        max_size=6,
    ),
)
COUNT = st.one_of(st.integers(0, 1000), st.sampled_from(BIG))


def _mutations(base: dict) -> list[bytes]:
    """Records that break the contract, built from a valid tweet's record."""

    def with_(**changes: object) -> bytes:
        return json.dumps({**base, **changes}, ensure_ascii=False).encode()

    return [
        with_(like_count=1.0),
        with_(followers_count="5"),
        with_(retweet_count=True),
        with_(like_count=-1),
        with_(followers_count=MAX_COUNT + 1),
        with_(like_count=float("nan")),  # json.dumps writes NaN, which is not JSON
        with_(v=2),
        with_(v=True),
        with_(v=1.0),
        with_(tweet_id="1.5"),
        with_(tweet_id=int(base["tweet_id"])),
        with_(tweet_id=""),
        with_(tweet_id="\u0663"),
        with_(tweet_id="9" * 20),
        with_(location=None),
        with_(location="a\x00b"),
        b"\xff\xfe",
        b"not json",
        b"{",
        b"[]",
        b"null",
        b'{"v":1}',
        json.dumps(base).encode()[:-1],  # truncated
    ]


@st.composite
def scenarios(draw) -> tuple[list[list[Delivery]], list[list[str]]]:
    days = draw(st.integers(2, 4))
    span = days * DAY_MS
    midnights = [d * DAY_MS + e for d in range(1, days) for e in (-1, 0, 1, -60_000)]
    at = st.one_of(st.integers(0, span - 1), st.sampled_from(midnights))
    n = draw(st.integers(8, 30))
    items: list[tuple[int, int, Delivery]] = []  # (ms, sequence, delivery): sorted stably
    for i in range(n):
        tweet_id = draw(st.sampled_from([str(1000 + i), f"0{1000 + i}", str(2**62 + i)]))
        t = dataclasses.replace(
            tweet(
                1,
                draw(LOCATION),
                followers=draw(COUNT),
                likes=draw(COUNT),
                retweets=draw(COUNT),
            ),
            tweet_id=tweet_id,
        )
        ms = draw(at)
        items.append((ms, len(items), Delivery(_moment(ms), t)))
        # Re-deliveries: minutes to hours later (across midnight when near it), sometimes
        # edited; the first delivery must win either way.
        for delay in draw(st.lists(st.integers(0, 3 * 3_600_000), max_size=2)):
            again = t
            if draw(st.booleans()):
                again = dataclasses.replace(t, location=draw(LOCATION), like_count=draw(COUNT))
            items.append((ms + delay, len(items), Delivery(_moment(ms + delay), again)))
        # Malformed deliveries, some with this tweet's id, possibly before the valid one.
        base = json.loads(t.to_json_bytes())
        for _ in range(draw(st.integers(0, 1))):
            bad = draw(st.sampled_from(_mutations(base)))
            bad_ms = max(0, ms + draw(st.integers(-3_600_000, 3_600_000)))
            items.append((bad_ms, len(items), Delivery(_moment(bad_ms), garbage=bad)))
    # Always: a tweet 1 ms before a drawn midnight, re-delivered (edited) just after it, with
    # a malformed record carrying its id delivered first: each example covers the boundary.
    midnight = draw(st.integers(1, days - 1)) * DAY_MS
    anchor = dataclasses.replace(tweet(1, 'Paris; "FR"', likes=BIG[0]), tweet_id="1")
    edited = dataclasses.replace(anchor, location="a,b\nc", like_count=7)
    base = json.loads(anchor.to_json_bytes())
    again_ms = midnight + draw(st.integers(0, 600_000))
    for when, delivery in (
        (midnight - 2, Delivery(_moment(midnight - 2), garbage=_mutations(base)[0])),
        (midnight - 1, Delivery(_moment(midnight - 1), anchor)),
        (again_ms, Delivery(_moment(again_ms), edited)),
    ):
        items.append((when, len(items), delivery))
    items.sort(key=lambda item: (item[0], item[1]))
    deliveries = [d for _, _, d in items]

    n_chunks = draw(st.integers(2, 4))
    cuts = sorted(
        draw(
            st.lists(
                st.integers(1, len(deliveries) - 1),
                min_size=n_chunks - 1,
                max_size=n_chunks - 1,
                unique=True,
            )
        )
    )
    bounds = [0, *cuts, len(deliveries)]
    chunks = [deliveries[a:b] for a, b in pairwise(bounds)]

    plans: list[list[str]] = []
    speed_runs = 0
    for _ in chunks:
        ops = draw(st.lists(st.sampled_from(["speed", "batch"]), max_size=3))
        ops.insert(draw(st.integers(0, len(ops))), "produce")
        kept = []
        for op in ops:
            if op == "speed":
                if speed_runs >= MAX_SPEED_RUNS - 1:  # keep one for the final catch-up
                    continue
                speed_runs += 1
            kept.append(op)
        plans.append(kept)
    return chunks, plans


def _moment(ms: int):
    return DAY0 + timedelta(milliseconds=ms)


def _assert_exact(s: Settings, produced: list[Delivery], trace: list[str]) -> None:
    served = as_dict(reads.serving_view(s))
    recomputed = as_dict(check.recompute(check.ingested_tweets(s)))
    assert served == recomputed, trace
    assert served == expected_view(produced), trace
    result = check.check(s)
    assert result.ok, (trace, str(result))
    # The split itself: batch holds exactly the days before D, speed the days from D on.
    cutoff = reads.batch_cutoff(s)
    if cutoff is not None:
        d = date.fromisoformat(cutoff)
        parts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for (day, _), row in expected_by_day(produced).items():
            part = parts["batch" if day < d else "speed"]
            part[:] = [a + b for a, b in zip(part, row, strict=True)]
        totals = reads.totals(s)
        for name in ("batch", "speed"):
            assert [int(v) for v in totals.loc[name]] == parts[name], (trace, name, cutoff)


def _assert_speed_holds_only_days_from_cutoff(s: Settings, trace: list[str]) -> None:
    """The batch layer absorbs, the speed layer discards: no speed row before D, ever."""
    cutoff = reads.batch_cutoff(s)
    if cutoff is None:
        return
    stale = warehouse.fetch_frame(
        "SELECT COUNT(*) AS n FROM speed_view WHERE ingest_day < %s", (cutoff,), settings=s
    )
    assert int(stale["n"].iloc[0]) == 0, (trace, cutoff)


@hsettings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
def test_serving_is_exact_under_any_interleaving(stack_home: Path, spark, scenario) -> None:
    chunks, plans = scenario
    s = ready(isolated_settings(stack_home))
    produced: list[Delivery] = []
    trace: list[str] = []
    caught_up = True
    checked = 0
    for chunk, plan in zip(chunks, plans, strict=True):
        for op in plan:
            if op == "produce":
                produce(s, chunk)
                produced += chunk
                caught_up = False
                trace.append(f"produce {len(chunk)}")
            elif op == "speed":
                run_speed(s, once=True)
                caught_up = True
                trace.append("speed")
            else:
                cutoff = produced[-1].ts.date() if produced else DAY0.date()
                run_batch(s, cutoff=cutoff, progress=False)
                trace.append(f"batch {cutoff}")
            _assert_speed_holds_only_days_from_cutoff(s, trace)
            if caught_up and produced:
                _assert_exact(s, produced, trace)
                checked += 1
    if not caught_up:
        run_speed(s, once=True)
        trace.append("speed (final)")
        _assert_exact(s, produced, trace)
        checked += 1
    assert checked >= 1
