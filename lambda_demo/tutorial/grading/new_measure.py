"""Exercise 05.1, a new measure end to end: ``hashtags_sum``, the hashtags of each distinct
tweet summed per location, through the real batch and speed layers into the serving view.

The answer is what a developer adds to the source: one ``view.Measure`` and the contract field
it reads, a function of a `FlatTweet`. Grading adds both at run time (as
``tests/integration/test_add_measure.py`` does), replays a dozen tweets over three days into a
namespace of the exercise's own, runs a batch run (the first two days) and the speed layer
once (the last day), and compares the serving view with a count made here from the tweets'
own hashtags. A known mistake is recognised without running the pipeline again: what it would
serve is predicted from the same tweets.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

from lambda_demo import contract, view
from lambda_demo.batch.run import run_batch
from lambda_demo.contract import FlatTweet, parse_api_tweet
from lambda_demo.ingestion.clock import format_utc
from lambda_demo.ingestion.replay import replay
from lambda_demo.serving import reads
from lambda_demo.settings import Settings
from lambda_demo.tutorial.grading.base import AnswerFailed, Exercise, Mistake
from lambda_demo.tutorial.grading.frames import frame_difference

NAME = "hashtags_sum"
COLUMNS = ("tweet_count", NAME)
DAY0 = datetime(2026, 11, 1, tzinfo=UTC)
CUTOFF = date(2026, 11, 3)
"""The batch run covers 1 and 2 November; the speed layer serves 3 November."""

#: (tweet id, hours after DAY0, location, text, hashtags the API found in it)
TWEETS: tuple[tuple[int, int, str, str, tuple[str, ...]], ...] = (
    (1, 10, "London", "#Spark, then #Spark again", ("Spark", "Spark")),
    (2, 12, "Paris", "no tags here", ()),
    (3, 30, "Zürich 🇨🇭", "C# or F#? #dotnet", ("dotnet",)),
    (4, 33, "London", "#x", ("x",)),
    (4, 37, "London", "#x #y #z", ("x", "y", "z")),  # delivered again, edited: not counted
    (5, 50, "Paris", "#p #q", ("p", "q")),
    (6, 56, "London", "#late #night", ("late", "night")),
    (7, 57, "東京", "おはよう", ()),
)


def _api_line(tweet_id: int, hours: int, location: str, text: str, tags: tuple[str, ...]) -> str:
    """One X API v2 stream line (the replay file format) with ``tags`` as hashtag entities."""
    entities = [{"start": 0, "end": len(tag) + 1, "tag": tag} for tag in tags]
    created = DAY0 + timedelta(hours=hours)
    data = {
        "id": str(1000 + tweet_id),
        "text": text,
        "created_at": format_utc(created),
        "author_id": "7",
        "lang": "en",
        "edit_history_tweet_ids": [str(1000 + tweet_id)],
        "public_metrics": {"retweet_count": 1, "reply_count": 0, "like_count": 2, "quote_count": 0},
        **({"entities": {"hashtags": entities}} if entities else {}),
    }
    user = {
        "id": "7",
        "name": "n",
        "username": "u",
        "location": location,
        "public_metrics": {"followers_count": 3, "following_count": 0},
    }
    return json.dumps({"data": data, "includes": {"users": [user]}}, ensure_ascii=False)


def _first_deliveries() -> list[tuple[str, FlatTweet]]:
    """(location, flat tweet) of each tweet's first line, read by the contract."""
    seen: set[int] = set()
    out = []
    for tweet in TWEETS:
        if tweet[0] not in seen:
            seen.add(tweet[0])
            parsed = parse_api_tweet(_api_line(*tweet))
            assert isinstance(parsed, FlatTweet), parsed
            out.append((parsed.location, parsed))
    return out


def _per_location(values: list[tuple[str, int]]) -> pd.DataFrame:
    frame = pd.DataFrame(values, columns=[view.KEY, NAME])
    grouped = frame.groupby(view.KEY, sort=True)
    out = pd.DataFrame({"tweet_count": grouped.size(), NAME: grouped[NAME].sum()})
    return out.astype("int64").reset_index()


def _hashtag_count(tweet: FlatTweet) -> int:
    """The reference field: every hashtag entity of the tweet, repeats included."""
    return len(tweet.hashtags)


def _hashtag_signs(tweet: FlatTweet) -> int:
    return tweet.text.count("#")


def _has_hashtags(tweet: FlatTweet) -> int:
    return 1 if tweet.hashtags else 0


Answer = tuple[view.Measure, Callable[[FlatTweet], int]]


@dataclass(frozen=True)
class NewMeasureExercise(Exercise):
    """The answer's measure and field, added at run time and run through every layer."""

    id: str
    task: str
    start: str
    reference: Answer
    mistakes: tuple[Mistake, ...] = ()

    def namespace(self, settings: Settings) -> Settings:
        """A topic, bucket, schema and checkpoints of the exercise's own."""
        tag = "grade-" + self.id.replace(".", "-")
        return settings.model_copy(
            update={
                "topic": f"{tag}-tweets",
                "dlq_topic": f"{tag}-tweets.dlq",
                "s3_bucket": f"lambda-demo-{tag}",
                "warehouse_schema": tag.replace("-", "_"),
                "checkpoint_location": str(settings.home / "checkpoints" / tag),
            }
        )

    def prepare(self, settings: Settings) -> Settings:
        """The tweets in the exercise's topic and archived in its bucket (the master dataset)."""
        from lambda_demo.tutorial.explore import reset_namespace

        scenario = self.namespace(settings)
        reset_namespace(scenario)
        path = scenario.home / "samples" / f"grade-{self.id}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(_api_line(*tweet) for tweet in TWEETS) + "\n", encoding="utf-8")
        replay([path], settings=scenario, progress=False)
        run_batch(scenario, cutoff=CUTOFF, only="archive", progress=False)
        return scenario

    def outcome(self, answer: Any, scenario: Settings) -> pd.DataFrame:
        """The serving view after a batch run and a speed run with the answer's measure."""
        from lambda_demo.speed.run import run_speed
        from lambda_demo.tutorial.recovery import fresh_workspace

        measure, field = _checked(answer)
        with _measure_added(measure, field):
            workspace = fresh_workspace(scenario, schema=scenario.warehouse_schema)
            run_batch(workspace, cutoff=CUTOFF, progress=False)
            run_speed(workspace, once=True)
            served = reads.serving_view(workspace)
        return served[[view.KEY, *(c for c in COLUMNS if c in served)]]

    def mistake_outcome(self, mistake: Mistake, scenario: Settings) -> pd.DataFrame:
        """What the pipeline serves with a mistake, predicted from the tweets (no Spark run)."""
        measure, field = mistake.answer
        return _per_location(
            [
                (location, 1 if measure.reads is None else field(tweet))
                for location, tweet in _first_deliveries()
            ]
        )

    def expected(self) -> pd.DataFrame:
        """From the table above alone: the first line of each tweet, its hashtags counted."""
        seen: set[int] = set()
        values = []
        for tweet_id, _hours, location, _text, tags in TWEETS:
            if tweet_id not in seen:
                seen.add(tweet_id)
                values.append((location, len(tags)))
        return _per_location(values)

    def difference(self, expected: pd.DataFrame, got: pd.DataFrame) -> str | None:
        return frame_difference(expected, got, COLUMNS)


def _checked(answer: Any) -> Answer:
    """The answer as (measure, field), or AnswerFailed saying what it should be."""
    shape = "answer with a pair: (view.Measure(name, reads=field), a function of a tweet)"
    if not isinstance(answer, tuple) or len(answer) != 2:
        raise AnswerFailed(shape)
    measure, field = answer
    if not isinstance(measure, view.Measure) or not callable(field):
        raise AnswerFailed(shape)
    if measure.name in view.MEASURE_NAMES:
        raise AnswerFailed(
            f"the view has a measure named {measure.name} already: name yours {NAME}"
        )
    for location, tweet in _first_deliveries():
        try:
            value = field(tweet)
        except Exception as exc:  # the learner's code: any error is feedback
            raise AnswerFailed(
                f"your function raised {type(exc).__name__}: {exc} (on a tweet from "
                f"{location!r}); it receives a FlatTweet, e.g. tweet.hashtags"
            ) from exc
        if isinstance(value, bool) or not isinstance(value, int):
            raise AnswerFailed(
                f"your function returned {value!r}; a measure sums whole numbers: return an int"
            )
    return measure, field


@contextlib.contextmanager
def _measure_added(measure: view.Measure, field: Callable[[FlatTweet], int]) -> Iterator[None]:
    """The measure in the view and its field on the contract, for this block only.

    Spark's Python workers import the contract from disk, where the field does not exist:
    while the block runs, the contract is shipped to them by value, field included.
    """
    from pyspark import cloudpickle

    known = {f.name for f in fields(FlatTweet)}  # dataclass fields are no class attributes
    added = (
        measure.reads is not None
        and measure.reads not in known
        and not hasattr(FlatTweet, measure.reads)
    )
    if added:
        setattr(FlatTweet, measure.reads, property(field))
    released = view.MEASURES
    view.MEASURES = (*released, measure)
    cloudpickle.register_pickle_by_value(contract)
    try:
        yield
    finally:
        cloudpickle.unregister_pickle_by_value(contract)
        view.MEASURES = released
        if added:
            delattr(FlatTweet, measure.reads)


_REFERENCE: Answer = (view.Measure(NAME, reads="hashtag_count"), _hashtag_count)

EXERCISE = NewMeasureExercise(
    id="05.1",
    task=f"Add the measure {NAME}: the hashtags of each distinct tweet, summed per location, "
    "through the batch layer, the speed layer and the serving view.",
    start="write a function of a tweet (a FlatTweet) that returns how many hashtags it has, "
    f"and a view.Measure named {NAME} that reads it, e.g. "
    f"Measure({NAME!r}, reads='hashtag_count'); then grade('05.1', (measure, function)).",
    reference=_REFERENCE,
    mistakes=(
        Mistake(
            answer=(view.Measure(NAME), _hashtag_count),
            hint="a Measure without `reads` counts tweets: your function is never called. "
            "Pass reads='hashtag_count', the name of the field your function computes.",
        ),
        Mistake(
            answer=(view.Measure(NAME, reads="hashtag_count"), _hashtag_signs),
            hint="counting '#' in the text counts 'C#' and 'F#' too: the API parsed the "
            "hashtags for you, in tweet.hashtags. Count those.",
        ),
        Mistake(
            answer=(view.Measure(NAME, reads="hashtag_count"), _has_hashtags),
            hint="your function says whether a tweet has hashtags (0 or 1), so the measure "
            "counts tweets with hashtags. Return how many it has: len(tweet.hashtags).",
        ),
    ),
)
