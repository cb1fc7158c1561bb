"""Lambda vs Kappa (notebook 07): both recomputations exact at every size, start-up untimed."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import isolated_settings

from lambda_demo.clients.spark import get_spark
from lambda_demo.serving import check
from lambda_demo.tutorial import kappa

pytestmark = pytest.mark.integration

SIZES = (40, 160)


def test_both_recomputations_are_exact_at_every_size_and_spark_starts_before_any_clock(
    stack_home: Path,
) -> None:
    base = isolated_settings(stack_home)
    pipelines = {tweets: kappa.namespace(base, tweets=tweets) for tweets in SIZES}
    for tweets, settings in pipelines.items():
        kappa.prepare(settings, tweets=tweets)

    measured = kappa.measure(pipelines)

    assert [(run.approach, run.tweets) for run in measured.runs] == [
        (approach, tweets) for tweets in SIZES for approach in ("Kappa", "Lambda")
    ]
    for run in measured.cold + measured.runs:
        settings = pipelines[run.tweets]
        truth = check.recompute(check.ingested_tweets(settings))
        differences = check.compare(truth, run.view)
        assert differences.empty, f"{run.approach} at {run.tweets} tweets:\n{differences}"
        assert run.view["tweet_count"].sum() == run.tweets  # the generator's distinct tweets

    # The session measure() used is still the one running: no clock included its start-up...
    app_started = get_spark(base).sparkContext.startTime / 1000
    assert app_started < min(run.started_at for run in measured.cold)
    # ...and the cold runs, which warm the Python workers up, all ended before any run counted.
    warm_from = max(run.started_at + run.seconds for run in measured.cold)
    assert warm_from <= min(run.started_at for run in measured.runs)
