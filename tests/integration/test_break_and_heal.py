"""Notebook 06's "Break it, watch it heal", step by step on a real stack of its own.

The speed layer and then the Kafka broker are stopped while a replay produces; after the
restarts the serving view must equal a view computed here from the replayed file alone. The
broker is stopped for real, so this runs on a PRIVATE stack: the session stack the other
tests share is never touched.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from pathlib import Path

import pytest
from helpers import all_records, isolated_settings, private_stack, query

from lambda_demo import stack
from lambda_demo.contract import FlatTweet, parse_api_tweet
from lambda_demo.errors import StackError
from lambda_demo.ingestion.replay import read_lines
from lambda_demo.serving.check import check
from lambda_demo.settings import Settings
from lambda_demo.speed.run import _interruptions_logged_quietly, stop_queries
from lambda_demo.tutorial.recovery import BreakAndHeal


def _services_up(settings: Settings) -> dict[str, tuple[bool, str]]:
    """``{service: (answering, address)}`` as ``stack status`` sees it."""
    return {s.name: (s.up, s.address) for s in stack.status(settings)}


def _expected_view(path: Path) -> dict[str, list[int]]:
    """Per location: tweets, followers, likes, retweets over the file's valid tweets, each
    tweet id once at its first line (the file is in delivery order)."""
    seen: set[str] = set()
    view: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for line in read_lines(path):
        parsed = parse_api_tweet(line)
        if not isinstance(parsed, FlatTweet) or parsed.tweet_id in seen:
            continue
        seen.add(parsed.tweet_id)
        row = view[parsed.location]
        row[0] += 1
        row[1] += parsed.followers_count
        row[2] += parsed.like_count
        row[3] += parsed.retweet_count
    return dict(view)


@pytest.mark.integration
def test_stopping_the_speed_layer_and_the_broker_mid_replay_leaves_the_view_exact() -> None:
    with private_stack() as stack_settings:
        settings = isolated_settings(stack_settings.home)
        # The notebook's pace (a simulated day in 30 s); the assertions below check that the
        # replay is still producing when each service stops.
        drill = BreakAndHeal.prepare(settings, tweets=3000, speedup=2880)
        try:
            _break_and_heal(drill)
        finally:
            with contextlib.suppress(Exception):  # the failure above is the one to report
                stop_queries(drill.queries, settings)


def _break_and_heal(drill: BreakAndHeal) -> None:
    settings = drill.settings
    drill.start_speed_layer()
    drill.start_replay()
    drill.await_serving(tweets=100)

    stopped = drill.stop_speed_layer()
    assert stopped["replay"] == "running", "the replay ended before the speed layer stopped"
    assert not any(q.isActive for q in drill.queries)
    piled = drill.await_backlog(records=stopped["lag_records"] + 300)
    assert piled["records in Kafka"] >= stopped["records in Kafka"] + 300
    assert piled["serving tweets"] == stopped["serving tweets"], "a stopped layer served"

    kafka_address = _services_up(settings)["kafka"][1]
    down = drill.stop_broker()
    assert down["replay"] == "running", "the replay ended before the broker stopped"
    assert "Kafka" in down["status says"] and "not answering" in down["status says"]
    services = _services_up(settings)
    assert services["kafka"] == (False, kafka_address)
    assert services["s3"][0] and services["postgres"][0], "stop_service stopped another service"

    drill.start_broker()
    assert _services_up(settings)["kafka"] == (True, kafka_address)
    first = drill.finish_replay()
    resumed = drill.resume_replay()
    assert resumed["failed"] == 0
    # A send that failed may still have reached the broker: the resume sends at most those.
    assert resumed["produced"] + resumed["dead_lettered"] <= first["failed"]

    lines = [int(dict(r.headers)["replay-line"]) for r in all_records(settings, settings.topic)]
    valid_lines = [
        number
        for number, line in enumerate(read_lines(drill.sample))
        if isinstance(parse_api_tweet(line), FlatTweet)
    ]
    assert sorted(lines) == valid_lines, "a valid line is missing from Kafka, or is there twice"

    drill.restart_speed_layer()
    assert query(settings, "SELECT COUNT(*) FROM speed_deployments") == [(1,)], (
        "the restart was a new deployment, not the checkpoint's"
    )

    verdict = drill.verify()
    expected = _expected_view(drill.sample)
    served = query(
        settings,
        "SELECT location, tweet_count, followers_sum, likes_sum, retweets_sum FROM serving_view",
    )
    assert {row[0]: list(row[1:]) for row in served} == expected
    assert verdict["serving tweets"] == verdict["valid tweets in the file"]
    assert verdict["serving tweets"] == sum(row[0] for row in expected.values())
    assert check(settings).ok
    assert list(drill.timeline().index) == [
        "speed layer started",
        "replay started",
        "speed layer keeping up",
        "speed layer stopped",
        "records pile up",
        "broker stopped",
        "broker started",
        "replay finished",
        "replay resumed",
        "speed layer caught up",
        "speed layer stopped, check",
    ]


def test_stop_service_names_the_services_when_the_name_is_unknown(tmp_path: Path) -> None:
    with pytest.raises(StackError, match=r"'zookeeper'.*\['kafka', 's3', 'postgres'\]"):
        stack.stop_service("zookeeper", Settings(home=tmp_path))


def test_py4j_errors_while_queries_stop_on_purpose_go_to_the_log_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    py4j = logging.getLogger("py4j.clientserver")
    caplog.set_level(logging.ERROR, logger="py4j.clientserver")
    with _interruptions_logged_quietly():
        py4j.error("proxy failed: java.lang.InterruptedException")
    assert caplog.records == []  # below the logger's level once demoted
    py4j.error("a real error, outside a stop")
    assert [r.levelname for r in caplog.records] == ["ERROR"]

    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="py4j.clientserver")  # e.g. the CLI's log file
    with _interruptions_logged_quietly():
        py4j.error("proxy failed: java.lang.InterruptedException")
    assert [r.levelname for r in caplog.records] == ["DEBUG"]
