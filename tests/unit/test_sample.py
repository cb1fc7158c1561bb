"""The synthetic stream: reproducible to the byte, and shaped like the real one."""

from __future__ import annotations

import gzip
import json
import statistics
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lambda_demo.contract import UNKNOWN_LOCATION, FlatTweet, Rejected, parse_api_tweet
from lambda_demo.ingestion.sample import generate, write

REPO = Path(__file__).resolve().parents[2]
START = datetime(2026, 11, 1, tzinfo=UTC)
TWEETS = 5000


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    return list(generate(tweets=TWEETS, days=3, seed=2024))


@pytest.fixture(scope="module")
def parsed(lines: list[bytes]) -> list[FlatTweet | Rejected | None]:
    return [parse_api_tweet(line) for line in lines]


def first_deliveries(lines: list[bytes]) -> list[bytes]:
    seen: set[bytes] = set()
    firsts = []
    for line in lines:
        if line not in seen:
            seen.add(line)
            firsts.append(line)
    return firsts


def valid_firsts(lines: list[bytes]) -> list[FlatTweet]:
    return [t for t in map(parse_api_tweet, first_deliveries(lines)) if isinstance(t, FlatTweet)]


def moment(created_at: str) -> datetime:
    return datetime.fromisoformat(created_at)


# --- determinism -----------------------------------------------------------------------------


def test_same_seed_gives_the_same_bytes() -> None:
    first = list(generate(tweets=2000, days=1, seed=7))
    assert first == list(generate(tweets=2000, days=1, seed=7))


def test_different_seeds_give_different_streams() -> None:
    assert list(generate(tweets=200, days=1, seed=7)) != list(generate(tweets=200, days=1, seed=8))


def test_written_files_are_byte_identical(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl.gz", tmp_path / "sub" / "b.jsonl.gz"
    counts = write(a, tweets=1500, days=2, seed=3)
    time.sleep(1.1)  # a gzip header with the wall-clock mtime would now differ
    assert write(b, tweets=1500, days=2, seed=3) == counts
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes()[:2] == b"\x1f\x8b"


def test_plain_and_gzip_files_hold_the_same_lines(tmp_path: Path) -> None:
    write(tmp_path / "s.jsonl.gz", tweets=300, days=1, seed=5)
    write(tmp_path / "s.jsonl", tweets=300, days=1, seed=5)
    plain = (tmp_path / "s.jsonl").read_bytes()
    assert gzip.decompress((tmp_path / "s.jsonl.gz").read_bytes()) == plain
    assert plain.split(b"\n")[:-1] == list(generate(tweets=300, days=1, seed=5))
    assert plain.endswith(b"\n")
    assert not list(tmp_path.glob("*.partial"))


def test_write_counts_match_the_file(tmp_path: Path) -> None:
    counts = write(tmp_path / "s.jsonl", tweets=3000, days=1, seed=11)
    lines = (tmp_path / "s.jsonl").read_bytes().split(b"\n")[:-1]
    results = [parse_api_tweet(line) for line in lines]
    rejected = sum(isinstance(r, Rejected) for r in results)
    duplicates = len(lines) - len(set(lines))
    assert counts == {
        "lines": len(lines),
        "tweets": 3000,
        "duplicates": duplicates,
        "malformed": rejected,
    }
    assert len(lines) == 3000 + duplicates + rejected


def test_committed_sample_is_reproducible(tmp_path: Path) -> None:
    committed = REPO / "data" / "sample_tweets" / "tweets.jsonl.gz"
    counts = write(tmp_path / "tweets.jsonl.gz", tweets=30000, days=3, seed=42)
    assert (tmp_path / "tweets.jsonl.gz").read_bytes() == committed.read_bytes()
    assert counts["tweets"] == 30000
    assert committed.stat().st_size < 5_000_000


def test_generation_streams_rather_than_building_a_list() -> None:
    started = time.monotonic()
    first = next(iter(generate(tweets=10**9, days=3, seed=1)))
    assert time.monotonic() - started < 5
    assert first.startswith(b"{")


@pytest.mark.parametrize(
    "arguments",
    [
        {"tweets": -1, "days": 1},
        {"tweets": 10, "days": 0},
        {"tweets": 10, "days": 1, "start": datetime(2026, 11, 1)},  # naive
        {"tweets": 10, "days": 1, "start": datetime(2090, 1, 1, tzinfo=UTC)},
    ],
)
def test_bad_arguments_are_refused(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        next(iter(generate(seed=1, **arguments)))


def test_start_moves_the_window() -> None:
    start = datetime(2027, 3, 14, 9, tzinfo=UTC)
    tweets = valid_firsts(list(generate(tweets=500, days=2, seed=9, start=start)))
    assert len(tweets) == 500
    assert all(start <= moment(t.created_at) < start + timedelta(days=2) for t in tweets)


def test_zero_tweets_is_an_empty_stream() -> None:
    assert list(generate(tweets=0, days=1, seed=1)) == []


# --- shape -----------------------------------------------------------------------------------


def test_lines_are_single_non_blank_lines(lines: list[bytes]) -> None:
    assert all(line and b"\n" not in line and line.strip() for line in lines)


def test_every_tweet_is_there_once_and_valid(lines: list[bytes]) -> None:
    tweets = valid_firsts(lines)
    assert len(tweets) == TWEETS
    assert len({t.tweet_id for t in tweets}) == TWEETS


def test_created_at_within_the_window(lines: list[bytes]) -> None:
    for tweet in valid_firsts(lines):
        assert START <= moment(tweet.created_at) < START + timedelta(days=3)


def test_ids_are_snowflakes_increasing_with_time(lines: list[bytes]) -> None:
    tweets = valid_firsts(lines)
    assert all(len(t.tweet_id) == 19 for t in tweets)
    by_id = sorted(tweets, key=lambda t: int(t.tweet_id))
    assert [t.created_at for t in by_id] == sorted(t.created_at for t in tweets)


def test_duplicates_are_about_half_a_percent_and_come_minutes_later(lines: list[bytes]) -> None:
    clock = ""
    clock_at: dict[bytes, str] = {}
    late_by: list[float] = []
    for line in lines:
        tweet = parse_api_tweet(line)
        if not isinstance(tweet, FlatTweet):
            continue
        clock = max(clock, tweet.created_at)
        if line in clock_at:
            late_by.append((moment(clock) - moment(clock_at[line])).total_seconds())
        else:
            clock_at[line] = clock
    assert 0.002 * TWEETS <= len(late_by) <= 0.01 * TWEETS
    assert all(0 <= delay <= 20 * 60 for delay in late_by)
    assert statistics.median(late_by) >= 60


def test_malformed_lines_are_about_a_third_of_a_percent_and_varied(
    parsed: list[FlatTweet | Rejected | None],
) -> None:
    reasons = Counter(r.reason for r in parsed if isinstance(r, Rejected))
    assert 0.001 * TWEETS <= sum(reasons.values()) <= 0.006 * TWEETS
    assert len(reasons) >= 5, reasons
    assert None not in parsed


def test_every_kind_of_malformed_line_shows_up_in_a_larger_stream() -> None:
    reasons = {
        r.reason
        for r in map(parse_api_tweet, generate(tweets=40000, days=1, seed=5))
        if isinstance(r, Rejected)
    }
    assert reasons == {
        "not_utf8",
        "not_json",
        "not_object",
        "missing_data",
        "bad_id",
        "bad_created_at",
        "author_not_in_includes",
        "bad_retweet_count",
        "bad_like_count",
        "bad_followers_count",
    }


def test_some_tweets_arrive_out_of_order_by_up_to_ten_minutes(lines: list[bytes]) -> None:
    clock = ""
    late_by = []
    for tweet in valid_firsts(lines):
        if tweet.created_at < clock:
            late_by.append((moment(clock) - moment(tweet.created_at)).total_seconds())
        clock = max(clock, tweet.created_at)
    assert 0.005 * TWEETS <= len(late_by) <= 0.05 * TWEETS
    assert max(late_by) <= 600


def test_traffic_has_a_daily_rhythm(lines: list[bytes]) -> None:
    hours = Counter(moment(t.created_at).hour for t in valid_firsts(lines))
    evening = sum(hours[h] for h in range(18, 23))
    night = sum(hours[h] for h in range(2, 7))
    assert evening > 2.5 * night


def test_locations_are_a_few_hundred_messy_keys(lines: list[bytes]) -> None:
    keys = Counter(t.location for t in valid_firsts(lines))
    assert 150 <= len(keys) <= 400
    assert keys.most_common(1)[0][1] < 0.25 * TWEETS  # no single key swamps the rest
    assert UNKNOWN_LOCATION in keys
    assert any(";" in k for k in keys)
    assert any('"' in k for k in keys)
    assert any("," in k for k in keys)
    assert any("\n" in k for k in keys)
    assert any(not k.isascii() for k in keys)
    assert any(ord(c) > 0xFFFF for k in keys for c in k)  # emoji outside the BMP


def test_raw_locations_include_every_edge_case(lines: list[bytes]) -> None:
    users = [
        json.loads(line)["includes"]["users"][0]
        for line in first_deliveries(lines)
        if isinstance(parse_api_tweet(line), FlatTweet)
    ]
    raw = [user.get("location", "<missing>") for user in users]
    assert "<missing>" in raw
    assert None in raw
    assert "" in raw
    assert any(isinstance(v, str) and v and not v.strip() for v in raw)
    assert any(isinstance(v, str) and v.strip() and v != v.strip() for v in raw)


def test_followers_are_heavy_tailed(lines: list[bytes]) -> None:
    followers = [t.followers_count for t in valid_firsts(lines)]
    assert min(followers) == 0
    assert statistics.median(followers) < 1000
    assert max(followers) >= 1_000_000


def test_most_engagement_counts_are_zero_with_a_long_tail(lines: list[bytes]) -> None:
    tweets = valid_firsts(lines)
    likes = [t.like_count for t in tweets]
    retweets = [t.retweet_count for t in tweets]
    assert sum(x == 0 for x in likes) > 0.5 * len(likes)
    assert sum(x == 0 for x in retweets) > 0.5 * len(retweets)
    assert max(likes) >= 100
    assert max(retweets) >= 20


def test_languages_and_hashtags(lines: list[bytes]) -> None:
    tweets = valid_firsts(lines)
    langs = Counter(t.lang for t in tweets)
    assert {"en", "es", "fr", "de", "ja", "pt"} <= set(langs)
    assert langs["en"] < 0.7 * len(tweets)
    with_tags = [t for t in tweets if t.hashtags]
    assert 0.2 * len(tweets) < len(with_tags) < 0.8 * len(tweets)
    assert all(f"#{tag}" in t.text for t in with_tags for tag in t.hashtags)


def test_authors_are_reused_with_stable_attributes(lines: list[bytes]) -> None:
    tweets = valid_firsts(lines)
    authors: dict[str, tuple[str, int]] = {}
    for t in tweets:
        assert authors.setdefault(t.author_id, (t.location, t.followers_count)) == (
            t.location,
            t.followers_count,
        )
    assert 500 <= len(authors) <= 5000
    assert all(a.isascii() and a.isdigit() for a in authors)
