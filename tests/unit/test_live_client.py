"""live's tweepy client against the local X API server, without Kafka (issue 21).

The redirect is requests' own mechanism (a transport adapter), so tweepy itself is used as
shipped; the rule sync keeps other programs' rules and refuses to stream with a bad rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import tweepy

from lambda_demo.errors import SettingsError, XApiError
from lambda_demo.ingestion.live import RULE_TAG, ApiRedirect, _connect, _KafkaStream, _sync_rules
from lambda_demo.ingestion.xapi import RULES_PATH, XapiServer, serve
from lambda_demo.settings import X_API_URL, Settings


@pytest.fixture
def server(tmp_path: Path) -> Iterator[XapiServer]:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with serve([empty]) as running:
        yield running


@pytest.fixture
def client(server: XapiServer) -> tweepy.StreamingClient:
    stream = tweepy.StreamingClient("any-token")
    stream.session.mount(X_API_URL + "/", ApiRedirect(server.url))
    return stream


def _add(server: XapiServer, value: str, tag: str | None) -> None:
    rule = {"value": value} if tag is None else {"value": value, "tag": tag}
    answer = requests.post(
        server.url + RULES_PATH,
        json={"add": [rule]},
        headers={"Authorization": "Bearer t"},
        timeout=5,
    )
    assert answer.json()["meta"]["summary"]["created"] == 1


def test_tweepy_requests_go_to_the_configured_url(
    server: XapiServer, client: tweepy.StreamingClient
) -> None:
    _add(server, "kafka", "another-app")
    rules = client.get_rules().data
    assert [(r.value, r.tag) for r in rules] == [("kafka", "another-app")]


def test_rule_sync_adds_ours_removes_stale_ones_and_keeps_foreign_ones(
    server: XapiServer, client: tweepy.StreamingClient
) -> None:
    _add(server, "cats", "another-app")
    _add(server, "dogs", None)
    _add(server, "old topic", RULE_TAG)
    _add(server, "#Python", RULE_TAG)
    _sync_rules(client, ["#Python", "kafka lang:en"])
    assert {(r["value"], r.get("tag")) for r in server.rules} == {
        ("cats", "another-app"),
        ("dogs", None),
        ("#Python", RULE_TAG),
        ("kafka lang:en", RULE_TAG),
    }


def test_a_rule_the_api_refuses_stops_live_before_it_streams(
    server: XapiServer, client: tweepy.StreamingClient
) -> None:
    with pytest.raises(SettingsError, match=r"'lang:en'.*non-negation.*LAMBDA_DEMO_FILTER_RULES"):
        _sync_rules(client, ["kafka", "lang:en"])
    assert server.rules == []  # the real API creates none of a request with an invalid rule


def test_a_foreign_rule_with_our_value_is_a_duplicate_we_can_live_with(
    server: XapiServer, client: tweepy.StreamingClient
) -> None:
    _add(server, "kafka", "another-app")
    _sync_rules(client, ["kafka"])  # the API refuses the duplicate; its tweets arrive anyway
    assert [(r["value"], r["tag"]) for r in server.rules] == [("kafka", "another-app")]


def _stream(url: str, token: str) -> _KafkaStream:
    """live's client without Kafka: these tests end before any line is handled."""
    stream = _KafkaStream(token, handler=None, where=url)  # type: ignore[arg-type]
    stream.session.mount(X_API_URL + "/", ApiRedirect(url))
    return stream


def test_a_refused_token_stops_the_stream_and_says_why(server: XapiServer) -> None:
    stream = _stream(server.url, token=" ")
    thread = _connect(stream, Settings(_env_file=None), sample=True, base_url=server.url)
    thread.join(30)
    assert not thread.is_alive(), "a 401 is not retried for ever"
    assert stream.fatal is not None
    assert "401 Unauthorized" in stream.fatal and "LAMBDA_DEMO_X_BEARER_TOKEN" in stream.fatal


def test_a_refused_token_on_the_rules_is_an_error_in_words(server: XapiServer) -> None:
    with pytest.raises(XApiError, match=r"401 Unauthorized.*LAMBDA_DEMO_X_BEARER_TOKEN"):
        _connect(_stream(server.url, " "), Settings(_env_file=None), sample=False, base_url="")


def test_no_server_at_the_url_is_an_error_in_words(tmp_path: Path) -> None:
    with serve([tmp_path / "never-read.jsonl"]) as gone:
        url = gone.url  # a port nothing listens on once the server has stopped
    with pytest.raises(XApiError, match=r"Cannot reach the X API at .*xapi serve"):
        _connect(_stream(url, "t"), Settings(_env_file=None), sample=False, base_url=url)


def test_an_empty_token_is_a_settings_error(tmp_path: Path) -> None:
    from lambda_demo.ingestion.live import start_live

    with pytest.raises(SettingsError, match="LAMBDA_DEMO_X_BEARER_TOKEN"):
        start_live(Settings(home=tmp_path, x_bearer_token="  ", _env_file=None))
