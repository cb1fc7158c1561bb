"""`grade` on the real warehouse: every reference answer passes, every known-wrong answer
fails with its own hint, and what is not an answer yet fails nothing."""

from __future__ import annotations

import pytest

from lambda_demo import view
from lambda_demo.settings import Settings
from lambda_demo.tutorial import grading

pytestmark = pytest.mark.integration

EXERCISES = sorted(grading.EXERCISES)


@pytest.mark.parametrize("exercise", EXERCISES)
def test_the_reference_answer_passes(settings: Settings, exercise: str) -> None:
    result = grading.grade(exercise, grading.reference(exercise), settings=settings)
    assert result.passed is True, result.feedback


@pytest.mark.parametrize(
    ("exercise", "mistake"),
    [(e, m) for e in EXERCISES for m in grading.EXERCISES[e].mistakes],
    ids=lambda value: value if isinstance(value, str) else value.hint[:40],
)
def test_each_known_mistake_fails_with_its_hint(
    settings: Settings, exercise: str, mistake: grading.Mistake
) -> None:
    result = grading.grade(exercise, mistake.answer, settings=settings)
    assert result.passed is False
    assert result.feedback.endswith(f"Hint: {mistake.hint}")
    assert "expected" in result.feedback or "missing" in result.feedback


def _by_author(tweet):
    return tweet.author_id.encode()


def _one_day_for_all(tweets):
    """Every tweet on one day, and no deduplication."""
    from pyspark.sql import functions as F

    return tweets.groupBy(F.lit("2026-11-03").cast("date").alias("ingest_day"), "location").agg(
        F.count("*").alias("tweet_count"),
        F.sum("followers_count").alias("followers_sum"),
        F.sum("like_count").alias("likes_sum"),
        F.sum("retweet_count").alias("retweets_sum"),
    )


def _without_unknown(tweets):
    """Drops the (unknown) location, as if it were not a place."""
    from pyspark.sql import functions as F

    return (
        tweets.where("location <> '(unknown)'")
        .dropDuplicates(["tweet_id"])
        .groupBy(F.to_date("ingest_ts").alias("ingest_day"), "location")
        .agg(
            F.count("*").alias("tweet_count"),
            F.sum("followers_count").alias("followers_sum"),
            F.sum("like_count").alias("likes_sum"),
            F.sum("retweet_count").alias("retweets_sum"),
        )
    )


# Wrong answers written here, not taken from the grader: each must fail and say where.
WRONG = {
    "01.1": [
        # A good enough key (by author), but nothing acknowledged.
        {"acks": 0, "key_serializer": _by_author},
        # The key as text, not bytes: the producer cannot send it.
        {"acks": "all", "key_serializer": lambda tweet: tweet.tweet_id},
        # A setting KafkaProducer does not have.
        {"acks": "all", "key_serializer": _by_author, "no_such_setting": 1},
    ],
    "03.1": [_one_day_for_all, _without_unknown],
    "02.1": [
        # Counts tweets, but sums nothing: the measures are zero.
        "SELECT location, COUNT(*) AS tweet_count, 0 AS followers_sum, 0 AS likes_sum, "
        "0 AS retweets_sum FROM raw_tweets WHERE ingest_day >= %(cutoff)s GROUP BY location",
        # The batch view's days instead of the speed layer's.
        "SELECT location, COUNT(DISTINCT tweet_id) AS tweet_count, SUM(followers_count) AS "
        "followers_sum, SUM(like_count) AS likes_sum, SUM(retweet_count) AS retweets_sum "
        "FROM raw_tweets WHERE ingest_day < %(cutoff)s GROUP BY location",
    ],
    "04.1": [
        # The batch view alone.
        "SELECT b.location, tweet_count, followers_sum, likes_sum, retweets_sum "
        "FROM batch_view b JOIN batch_meta m USING (run_id)",
        # Not grouped: a location in both views comes twice.
        "SELECT location, tweet_count, followers_sum, likes_sum, retweets_sum FROM batch_view "
        "JOIN batch_meta USING (run_id) UNION ALL SELECT location, tweet_count, "
        "followers_sum, likes_sum, retweets_sum FROM speed_view JOIN speed_deployments "
        "USING (deployment) WHERE serving AND ingest_day >= '2026-11-03'",
    ],
    "05.1": [
        # The likes, not the hashtags: a field that exists already is summed as it is.
        (view.Measure("hashtags_sum", reads="like_count"), lambda tweet: len(tweet.hashtags)),
        # Hashtags without repeats: London's "#Spark, then #Spark again" has two.
        (view.Measure("hashtags_sum", reads="tag_set"), lambda tweet: len(set(tweet.hashtags))),
    ],
    "06.1": [
        # The batch part alone.
        "SELECT location, CAST(followers_sum AS NUMERIC) / tweet_count AS followers_per_tweet, "
        "(SELECT COUNT(DISTINCT author_id) FROM batch_authors a WHERE a.location = b.location) "
        "AS authors FROM batch_serving b",
        # Every author of every location, not each location's own.
        "SELECT location, CAST(SUM(followers_sum) AS NUMERIC) / SUM(tweet_count) AS "
        "followers_per_tweet, (SELECT COUNT(*) FROM (SELECT author_id FROM batch_authors UNION "
        "SELECT author_id FROM speed_authors) AS everyone) AS authors FROM (SELECT location, "
        "tweet_count, followers_sum FROM batch_serving UNION ALL SELECT location, tweet_count, "
        "followers_sum FROM speed_serving) AS parts GROUP BY location",
    ],
}


#: What the feedback names to say where an answer is wrong (a location, unless listed).
WHERE = {"01.1": ("expected", "refused", "failed")}


@pytest.mark.parametrize(
    ("exercise", "answer"),
    [(e, a) for e, ans in WRONG.items() for a in ans],
    ids=lambda value: value if isinstance(value, str) and len(value) < 8 else None,
)
def test_other_wrong_answers_fail_naming_a_location(
    settings: Settings, exercise: str, answer: object
) -> None:
    result = grading.grade(exercise, answer, settings=settings)
    assert result.passed is False
    assert any(word in result.feedback for word in WHERE.get(exercise, ("location",)))


def test_every_graded_exercise_has_wrong_answers_tested_here() -> None:
    assert set(WRONG) == set(grading.EXERCISES)


@pytest.mark.parametrize("answer", [None, ..., "", "   "])
def test_an_unattempted_exercise_says_how_to_start_and_fails_nothing(
    settings: Settings, answer: object
) -> None:
    result = grading.grade("02.1", answer, settings=settings)  # type: ignore[arg-type]
    assert result.passed is None
    assert "grade('02.1'" in result.feedback
    assert str(result).startswith("02.1 · not attempted")


@pytest.mark.parametrize("exercise", ["01.1", "03.1"])
def test_an_unattempted_code_exercise_says_how_to_start(settings: Settings, exercise: str) -> None:
    result = grading.grade(exercise, None, settings=settings)
    assert result.passed is None
    assert f"grade('{exercise}'" in result.feedback


def test_a_function_spark_refuses_is_feedback_not_a_crash(settings: Settings) -> None:
    result = grading.grade(
        "03.1", lambda tweets: tweets.groupBy("no_such_column").count(), settings=settings
    )
    assert result.passed is False
    assert "no_such_column" in result.feedback


def test_the_producer_exercise_observes_what_a_broker_acknowledged(settings: Settings) -> None:
    """acks=1 is acknowledged by the leader too: a setting other than the reference's passes
    when its effect is the same."""
    answer = {"acks": 1, "key_serializer": lambda tweet: tweet.tweet_id.encode()}
    result = grading.grade("01.1", answer, settings=settings)
    assert result.passed is True, result.feedback


def test_a_query_the_warehouse_refuses_is_feedback_not_a_crash(settings: Settings) -> None:
    result = grading.grade("04.1", "SELECT location FROM no_such_table", settings=settings)
    assert result.passed is False
    assert "no_such_table" in result.feedback


def test_a_missing_column_is_named(settings: Settings) -> None:
    result = grading.grade("04.1", "SELECT location FROM batch_view", settings=settings)
    assert result.passed is False
    assert "no column tweet_count" in result.feedback


def test_an_unknown_exercise_lists_the_graded_ones() -> None:
    with pytest.raises(KeyError, match=r"02\.1"):
        grading.grade("99.9", "SELECT 1")


@pytest.mark.parametrize(
    "answer",
    [
        "not a pair",
        (view.Measure("tweet_count"), len),
        (view.Measure("hashtags_sum", reads="hashtag_count"), lambda tweet: tweet.no_such_field),
        (view.Measure("hashtags_sum", reads="hashtag_count"), lambda tweet: "3"),
    ],
)
def test_a_new_measure_that_cannot_run_is_feedback_before_any_spark_run(
    settings: Settings, answer: object
) -> None:
    result = grading.grade("05.1", answer, settings=settings)
    assert result.passed is False
    assert not result.feedback.startswith("location")
