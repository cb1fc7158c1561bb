"""A measure added at run time reaches every layer: replay -> speed -> batch -> serving -> check.

First a warehouse serves the view as released (batch and speed, two days). Then the test
adds ``hashtags_sum`` the way a learner would in the source: one line in the view, plus the
contract field it reads (`helpers.add_hashtags_measure`). ``ensure_schema`` migrates the
tables, and the real stack runs again: the replay tool writes API-format lines to Kafka, the
speed layer is redeployed (the old deployment refuses to add to rows counted without the
measure) and runs once, a batch run with the last day as cutoff reloads and absorbs the days
before it. The serving view must carry the new measure, over all three days, equal to a sum
computed here from the input lines alone, and ``check`` must agree.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import DAY0, add_hashtags_measure

from lambda_demo import contract
from lambda_demo.batch.run import run_batch
from lambda_demo.clients import warehouse
from lambda_demo.errors import LambdaDemoError
from lambda_demo.ingestion.replay import replay
from lambda_demo.serving import reads
from lambda_demo.serving.check import check
from lambda_demo.settings import Settings
from lambda_demo.speed.run import run_speed
from lambda_demo.speed.sink import MeasureAddedLater

pytestmark = pytest.mark.integration

Tweet = tuple[int, int, str, list[str]]
"""(tweet id, hours after DAY0, location, hashtags)"""

# Three ingest days. Tweet 4 comes twice, the second time with other hashtags: its first
# delivery is the one that counts.
TWEETS: list[Tweet] = [
    (1, 10, "London", ["Kafka", "Spark"]),
    (2, 12, "Paris", []),
    (3, 18, "Zürich 🇨🇭", ["a", "b", "c"]),
    (4, 33, "London", ["x"]),
    (5, 35, "Paris", ["p", "q"]),
    (4, 37, "London", ["x", "y", "z"]),
    (6, 56, "London", ["late", "night", "tags", "four"]),
    (7, 57, "Zürich 🇨🇭", []),
    (8, 58, "Paris", ["z"]),
]
LAST_DAY = (DAY0 + timedelta(days=2)).date()


def _api_line(tweet_id: int, hours: int, location: str, tags: list[str]) -> bytes:
    """One X API v2 filtered-stream line, the replay file format, with ``tags`` as hashtags."""
    created = DAY0 + timedelta(hours=hours)
    text = " ".join(f"#{tag}" for tag in tags) or "no tags"
    hashtags, start = [], 0
    for tag in tags:
        hashtags.append({"start": start, "end": start + 1 + len(tag), "tag": tag})
        start += len(tag) + 2
    data = {
        "id": str(1000 + tweet_id),
        "text": text,
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "author_id": "7",
        "lang": "en",
        "edit_history_tweet_ids": [str(1000 + tweet_id)],
        "public_metrics": {"retweet_count": 1, "reply_count": 0, "like_count": 2, "quote_count": 0},
        **({"entities": {"hashtags": hashtags}} if hashtags else {}),
    }
    user = {
        "id": "7",
        "name": "n",
        "username": "u",
        "location": location,
        "public_metrics": {"followers_count": 3, "following_count": 0},
    }
    return json.dumps({"data": data, "includes": {"users": [user]}}, ensure_ascii=False).encode()


def _expected() -> dict[str, list[int]]:
    """Per location: [tweets, hashtags], each tweet id at its first line, from TWEETS alone."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    seen: set[int] = set()
    for tweet_id, _hours, location, tags in TWEETS:
        if tweet_id not in seen:
            seen.add(tweet_id)
            out[location][0] += 1
            out[location][1] += len(tags)
    return dict(out)


@pytest.fixture
def contract_sent_by_value() -> Iterator[None]:
    """Ship the contract to Spark's Python workers by value, inside the function Spark sends.

    The workers import the package from disk, whose ``FlatTweet`` has no ``hashtag_count``:
    only this process has it, as only a new release on disk would give it to them. The view
    needs no such help, and that is what this test proves: the driver puts the fields its
    view reads into the function it sends (`lambda_demo.speed.stream.validator`). Were the
    workers to derive the list from their own ``view``, the speed layer would fail with
    RESULT_COLUMN_NAMES_MISMATCH (missing ``hashtag_count``).
    """
    from pyspark import cloudpickle

    cloudpickle.register_pickle_by_value(contract)
    try:
        yield
    finally:
        cloudpickle.unregister_pickle_by_value(contract)


def _replay(path: Path, settings: Settings, tweets: list[Tweet]) -> None:
    """Replay ``tweets`` and one line that is not JSON (dead-lettered) from ``path``."""
    path.write_bytes(b"\n".join([*(_api_line(*t) for t in tweets), b"{not json"]) + b"\n")
    counts = replay(files=[path], settings=settings, progress=False)
    assert (counts.produced, counts.dead_lettered, counts.failed) == (len(tweets), 1, 0)


def _count(settings: Settings, table: str) -> int:
    return int(
        warehouse.fetch_frame(f"SELECT COUNT(*) AS n FROM {table}", settings=settings)["n"][0]
    )


def test_a_measure_added_at_run_time_is_served_exactly(
    settings: Settings,
    spark,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    contract_sent_by_value: None,
) -> None:
    # A warehouse that already serves the released view: two days, batch and speed.
    _replay(tmp_path / "days-0-1.jsonl", settings, TWEETS[:6])
    run_speed(settings, once=True)
    run_batch(settings, cutoff=DAY0.date() + timedelta(days=1), progress=False)
    assert reads.serving_view(settings).columns[-1] == "retweets_sum"

    add_hashtags_measure(monkeypatch)
    warehouse.ensure_schema(settings)  # what every command does first
    # The loaded copy lacked the field: discarded, to be reloaded from S3 with it.
    assert _count(settings, "raw_tweets") == _count(settings, "loaded_objects") == 0
    # Every row of both views predates the measure: no number to serve for it yet.
    with pytest.raises(LambdaDemoError, match="hashtags_sum is not computed yet"):
        reads.serving_view(settings)

    _replay(tmp_path / "day-2.jsonl", settings, TWEETS[6:])
    # The deployment counted tweets without the measure: it refuses to add to those rows...
    with pytest.raises(MeasureAddedLater, match="run the speed layer with a new checkpoint"):
        run_speed(settings, once=True)
    # ... so the new query is a new deployment, which rebuilds from Kafka and takes over.
    run_speed(settings, once=True, checkpoint_name="speed_view_v2")
    run_batch(settings, cutoff=LAST_DAY, progress=False)

    served = reads.serving_view(settings)
    assert served.columns[-1] == "hashtags_sum"
    assert served["hashtags_sum"].dtype == "int64"
    assert {
        row.location: [row.tweet_count, row.hashtags_sum] for row in served.itertuples()
    } == _expected()
    parts = reads.totals(settings)  # both layers contributed to the new measure
    assert parts.loc["batch", "hashtags_sum"] == 2 + 0 + 3 + 1 + 2  # days 0 and 1
    assert parts.loc["speed", "hashtags_sum"] == 4 + 0 + 1  # the last day
    # The batch run reloaded every archived delivery, the first day's too, with the field.
    raw = warehouse.fetch_frame(
        "SELECT CAST(SUM(hashtag_count) AS BIGINT) AS s FROM raw_tweets", settings=settings
    )
    assert raw["s"][0] == sum(len(tags) for *_, tags in TWEETS)

    result = check(settings)
    assert result.ok, str(result)
    assert result.tweets == len({t[0] for t in TWEETS})
