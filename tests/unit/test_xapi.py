"""The local X API server (issue 21): rule language, auth, rules endpoint, fields, 429, streams.

Every HTTP test talks to a real server on an ephemeral port with a real HTTP client.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from lambda_demo.errors import XApiError
from lambda_demo.ingestion.clock import wait_until
from lambda_demo.ingestion.xapi import (
    FILTERED_STREAM_PATH,
    OPERATIONAL_DISCONNECT,
    RULES_PATH,
    SAMPLE_STREAM_PATH,
    Post,
    RuleError,
    XapiServer,
    compile_rule,
    serve,
)

AUTH = {"Authorization": "Bearer any-token"}
T0 = datetime(2026, 11, 1, tzinfo=UTC)
ALL_FIELDS = {
    "tweet.fields": "created_at,public_metrics,entities,lang",
    "user.fields": "location,public_metrics",
    "expansions": "author_id",
}


def _payload(
    tweet_id: int, text: str, *, lang: str = "en", hashtags: tuple[str, ...] = (), second: int = 0
) -> dict:
    """A line shaped like the sample's (which is what the real API sends for ALL_FIELDS)."""
    data = {
        "author_id": str(1000 + tweet_id),
        "created_at": (T0 + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "edit_history_tweet_ids": [str(tweet_id)],
        "id": str(tweet_id),
        "lang": lang,
        "public_metrics": {"retweet_count": 1, "reply_count": 0, "like_count": 2, "quote_count": 0},
        "text": text,
    }
    if hashtags:
        data["entities"] = {"hashtags": [{"start": 0, "end": 1, "tag": tag} for tag in hashtags]}
    user = {
        "id": str(1000 + tweet_id),
        "name": "Ana",
        "username": "ana",
        "location": "Lisboa",
        "public_metrics": {"followers_count": 7, "following_count": 1, "tweet_count": 3},
    }
    return {
        "data": data,
        "includes": {"users": [user]},
        "matching_rules": [{"id": "1", "tag": "from the file"}],
    }


LINES = [
    _payload(1, "Kafka is fast", hashtags=("Kafka",), second=0),
    _payload(2, "ich mag Kafka", lang="de", second=1),
    _payload(3, "pineapple pie", second=2),
    b"not json at all",
    _payload(4, "big data everywhere #Python", hashtags=("Python",), second=3),
]


def _write(path: Path, lines: list) -> Path:
    raw = [line if isinstance(line, bytes) else json.dumps(line).encode() for line in lines]
    path.write_bytes(b"\n".join(raw) + b"\n")
    return path


@pytest.fixture
def sample_file(tmp_path: Path) -> Path:
    return _write(tmp_path / "tweets.jsonl", LINES)


@pytest.fixture
def server(sample_file: Path) -> Iterator[XapiServer]:
    with serve([sample_file], once=True, keep_alive=0.05) as running:
        yield running


def _post(**fields: object) -> Post:
    data = {"text": "", "lang": "en", **fields}
    return Post.of(data)


def _hashtags(*tags: str) -> dict:
    return {"hashtags": [{"tag": tag} for tag in tags]}


# --- the rule language ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "data", "expected"),
    [
        ("apple", {"text": "I love Apple!"}, True),
        ("apple", {"text": "pineapple pie"}, False),  # a word, not a substring
        ('"big data"', {"text": "so much Big Data today"}, True),
        ('"big data"', {"text": "data is big"}, False),
        ("#kafka", {"entities": _hashtags("Kafka")}, True),
        ("#Kafka", {"text": "kafka #Kafka but no entity"}, False),
        ("#Kafka", {"entities": _hashtags("KafkaStreams")}, False),  # exact hashtag
        ("kafka lang:en", {"text": "kafka", "lang": "en"}, True),
        ("kafka lang:en", {"text": "kafka", "lang": "de"}, False),
        # AND binds tighter than OR: apple OR (iphone lang:en)
        ("apple OR iphone lang:en", {"text": "apple", "lang": "es"}, True),
        ("apple OR iphone lang:en", {"text": "iphone", "lang": "es"}, False),
        ("(apple OR iphone) lang:en", {"text": "apple", "lang": "es"}, False),
        ("(apple OR iphone) lang:en", {"text": "iphone", "lang": "en"}, True),
        ("kafka -spark", {"text": "kafka and spark"}, False),
        ("kafka -spark", {"text": "kafka alone"}, True),
        ("kafka -(spark OR flink)", {"text": "kafka flink"}, False),
        ("kafka -lang:de", {"text": "kafka", "lang": "de"}, False),
        ("東京", {"text": "今日 は 東京"}, True),
    ],
)
def test_rules_match_words_phrases_hashtags_and_languages(
    rule: str, data: dict, expected: bool
) -> None:
    assert compile_rule(rule)(_post(**data)) is expected


@pytest.mark.parametrize(
    ("rule", "says"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("lang:en", "non-negation term"),
        ("-kafka", "non-negation term"),
        ("kafka OR lang:en", "non-negation term"),  # one branch selects nothing by itself
        ("kafka OR", "ends where a term"),
        ("OR kafka", "OR needs a term"),
        ("(kafka", "never closed"),
        ("kafka)", "unexpected ')'"),
        ("kafka ()", "a ) comes where"),
        ("from:someone kafka", "operator from: is not supported"),
        ('"unclosed phrase', "no closing quote"),
        ("#", "not a hashtag"),
        ("lang:EN kafka", "language code"),
        ("!!!", "no letters or digits"),
        ("kafka " * 100, "at most 512"),
    ],
)
def test_malformed_rules_say_what_is_wrong(rule: str, says: str) -> None:
    with pytest.raises(RuleError, match=says.replace("(", r"\(").replace(")", r"\)")):
        compile_rule(rule)


# --- auth and the rules endpoint ------------------------------------------------------------------


@pytest.mark.parametrize("path", [RULES_PATH, FILTERED_STREAM_PATH, SAMPLE_STREAM_PATH])
@pytest.mark.parametrize("header", [None, "Basic dXNlcjpwYXNz", "Bearer "])
def test_every_endpoint_needs_a_bearer_token(
    server: XapiServer, path: str, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    answer = requests.get(server.url + path, headers=headers, timeout=5)
    assert answer.status_code == 401
    assert answer.json()["title"] == "Unauthorized"
    assert server.connections == 0


def _rules(server: XapiServer, body: object, **params: str) -> requests.Response:
    return requests.post(server.url + RULES_PATH, json=body, params=params, headers=AUTH, timeout=5)


def test_rules_are_added_listed_and_deleted_with_the_real_shapes(server: XapiServer) -> None:
    empty = requests.get(server.url + RULES_PATH, headers=AUTH, timeout=5).json()
    assert "data" not in empty and empty["meta"]["result_count"] == 0

    added = _rules(server, {"add": [{"value": "kafka", "tag": "streams"}, {"value": "#Python"}]})
    assert added.status_code == 200
    body = added.json()
    assert body["meta"]["summary"] == {"created": 2, "not_created": 0, "valid": 2, "invalid": 0}
    assert "errors" not in body
    kafka, python = body["data"]
    assert (kafka["value"], kafka["tag"], python["value"]) == ("kafka", "streams", "#Python")
    assert "tag" not in python
    for rule in (kafka, python):
        assert isinstance(rule["id"], str) and rule["id"].isdigit() and len(rule["id"]) == 19

    listed = requests.get(server.url + RULES_PATH, headers=AUTH, timeout=5).json()
    assert listed["data"] == [kafka, python] and listed["meta"]["result_count"] == 2
    one = requests.get(server.url + RULES_PATH, params={"ids": python["id"]}, headers=AUTH)
    assert one.json()["data"] == [python]

    deleted = _rules(server, {"delete": {"ids": [kafka["id"], "1234"]}}).json()
    assert deleted["meta"]["summary"] == {"deleted": 1, "not_deleted": 1}
    assert [e["value"] for e in deleted["errors"]] == ["1234"]
    assert server.rules == [python]


def test_an_invalid_rule_creates_nothing_and_says_why(server: XapiServer) -> None:
    body = _rules(server, {"add": [{"value": "kafka"}, {"value": "lang:en", "tag": "t"}]}).json()
    assert body["meta"]["summary"] == {"created": 0, "not_created": 2, "valid": 1, "invalid": 1}
    (error,) = body["errors"]
    assert error["value"] == "lang:en"
    assert error["title"] == "UnprocessableEntity"
    assert error["type"] == "https://api.twitter.com/2/problems/invalid-rules"
    assert "non-negation term" in error["details"][0]
    assert server.rules == []


def test_a_duplicate_value_is_refused_and_the_others_created(server: XapiServer) -> None:
    first = _rules(server, {"add": [{"value": "kafka", "tag": "other-app"}]}).json()["data"][0]
    body = _rules(server, {"add": [{"value": "kafka", "tag": "mine"}, {"value": "spark"}]}).json()
    assert body["meta"]["summary"] == {"created": 1, "not_created": 1, "valid": 1, "invalid": 1}
    assert body["errors"] == [
        {
            "value": "kafka",
            "id": first["id"],
            "title": "DuplicateRule",
            "type": "https://api.twitter.com/2/problems/duplicate-rules",
        }
    ]
    assert [r["value"] for r in server.rules] == ["kafka", "spark"]


def test_dry_run_answers_without_changing_the_rules(server: XapiServer) -> None:
    kept = _rules(server, {"add": [{"value": "kafka"}]}).json()["data"][0]
    trial = _rules(server, {"add": [{"value": "spark"}]}, dry_run="true").json()
    assert trial["meta"]["summary"]["created"] == 1 and trial["data"][0]["value"] == "spark"
    gone = _rules(server, {"delete": {"ids": [kept["id"]]}}, dry_run="true").json()
    assert gone["meta"]["summary"] == {"deleted": 1, "not_deleted": 0}
    assert server.rules == [kept]


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[]", b"{}", b'{"add": [], "delete": {"ids": []}}', b'{"add": [{"tag": 1}]}'],
)
def test_a_malformed_rules_request_is_a_400(server: XapiServer, body: bytes) -> None:
    answer = requests.post(server.url + RULES_PATH, data=body, headers=AUTH, timeout=5)
    assert answer.status_code == 400
    assert answer.json()["type"] == "https://api.twitter.com/2/problems/invalid-request"


# --- the streams ---------------------------------------------------------------------------------


def _stream(server: XapiServer, path: str, params: dict | None = None) -> requests.Response:
    return requests.get(
        server.url + path, params=params, headers=AUTH, stream=True, timeout=(5, 10)
    )


def _lines(response: requests.Response) -> list[bytes]:
    """Every line of a stream until the server ends it, keep-alives left out."""
    with response:
        return [line for line in response.iter_lines() if line]


def test_the_sample_stream_sends_every_line_with_the_fields_asked_for(
    server: XapiServer,
) -> None:
    response = _stream(server, SAMPLE_STREAM_PATH, ALL_FIELDS)
    assert response.status_code == 200
    assert response.headers["Transfer-Encoding"] == "chunked"
    lines = _lines(response)
    assert server.wait(10)
    assert lines[3] == b"not json at all"  # sent as it is, for the dead-letter path
    for line, original in zip(lines, LINES, strict=True):
        if isinstance(original, dict):
            # exactly the recorded payload, without the file's matching_rules
            expected = {"data": original["data"], "includes": original["includes"]}
            assert json.loads(line) == expected
    assert server.sent == [0, 1, 2, 3, 4]


def test_fields_that_were_not_requested_are_left_out(server: XapiServer) -> None:
    lines = _lines(_stream(server, SAMPLE_STREAM_PATH))
    first = json.loads(lines[0])
    assert first == {
        "data": {"edit_history_tweet_ids": ["1"], "id": "1", "text": "Kafka is fast"}
    }  # no author_id, no created_at, no includes

    with serve([server.files[0]], once=True) as again:
        params = {"expansions": "author_id", "user.fields": "location"}
        payload = json.loads(_lines(_stream(again, SAMPLE_STREAM_PATH, params))[0])
        assert set(payload["data"]) == {"id", "text", "edit_history_tweet_ids", "author_id"}
        assert payload["includes"] == {
            "users": [{"id": "1001", "name": "Ana", "username": "ana", "location": "Lisboa"}]
        }


def test_an_unknown_field_is_a_400_naming_it(server: XapiServer) -> None:
    answer = _stream(server, SAMPLE_STREAM_PATH, {"tweet.fields": "lang,colour"})
    assert answer.status_code == 400
    (error,) = answer.json()["errors"]
    assert error["parameters"] == {"tweet.fields": ["colour"]}
    assert server.connections == 0


def test_the_filtered_stream_sends_matching_tweets_with_their_rules(server: XapiServer) -> None:
    added = _rules(server, {"add": [{"value": "kafka", "tag": "k"}, {"value": "#Python"}]})
    kafka, python = added.json()["data"]
    lines = _lines(_stream(server, FILTERED_STREAM_PATH, ALL_FIELDS))
    assert server.wait(10)
    assert server.sent == [0, 1, 3, 4]  # not "pineapple pie"
    got = [json.loads(line) if line.startswith(b"{") else line for line in lines]
    assert [g["matching_rules"] if isinstance(g, dict) else g for g in got] == [
        [{"id": kafka["id"], "tag": "k"}],
        [{"id": kafka["id"], "tag": "k"}],
        b"not json at all",
        [{"id": python["id"]}],
    ]


def test_keep_alives_flow_while_nothing_matches(tmp_path: Path) -> None:
    tweets = _write(tmp_path / "tweets.jsonl", [_payload(1, "kafka"), _payload(2, "spark")])
    with serve([tweets], keep_alive=0.05) as server:
        _rules(server, {"add": [{"value": "flink"}]})
        with _stream(server, FILTERED_STREAM_PATH) as response:
            chunks = response.iter_lines()
            assert [next(chunks) for _ in range(3)] == [b"", b"", b""]  # bare \r\n
        assert server.played == 2
        assert server.sent == []


def test_reconnecting_too_often_is_a_429_with_rate_limit_headers(sample_file: Path) -> None:
    with serve([sample_file], keep_alive=0.05, connections_per_window=2) as server:
        for remaining in ("1", "0"):
            with _stream(server, SAMPLE_STREAM_PATH) as response:
                assert response.status_code == 200
                assert response.headers["x-rate-limit-remaining"] == remaining
        refused = _stream(server, SAMPLE_STREAM_PATH)
        assert refused.status_code == 429
        assert refused.json()["title"] == "Too Many Requests"
        assert refused.headers["x-rate-limit-limit"] == "2"
        assert refused.headers["x-rate-limit-remaining"] == "0"
        assert int(refused.headers["x-rate-limit-reset"]) > time.time()
        assert server.connections == 2


def test_an_operational_disconnect_is_announced_then_the_stream_ends(tmp_path: Path) -> None:
    paced = _write(tmp_path / "paced.jsonl", [_payload(i, "kafka", second=i) for i in range(600)])
    with serve([paced], speedup=100, keep_alive=0.05) as server:
        response = _stream(server, SAMPLE_STREAM_PATH)
        lines = response.iter_lines()
        assert next(line for line in lines if line)  # the first tweet arrived
        assert server.disconnect() == 1
        rest = [line for line in lines if line]
        assert rest[-1] == OPERATIONAL_DISCONNECT
        assert json.loads(rest[-1])["errors"][0]["title"] == "operational-disconnect"
        # recorded once written, a moment after the client could read it
        wait_until(
            lambda: None in server.sent, 10, "the farewell to be recorded", interval_seconds=0.01
        )
        assert server.sent[-1] is None
        assert len(server.sent) == len(rest) + 1


def test_tweets_played_while_no_client_is_connected_are_gone(tmp_path: Path) -> None:
    paced = _write(tmp_path / "paced.jsonl", [_payload(i, "kafka", second=i) for i in range(600)])
    with serve([paced], speedup=100, keep_alive=0.05) as server:
        with _stream(server, SAMPLE_STREAM_PATH) as first:
            assert next(line for line in first.iter_lines() if line)
        gap_start = server.played
        # the clock goes on without a client
        wait_until(lambda: server.played >= gap_start + 5, 10, "5 lines", interval_seconds=0.01)
        with _stream(server, SAMPLE_STREAM_PATH) as second:
            resumed = json.loads(next(line for line in second.iter_lines() if line))
        assert int(resumed["data"]["id"]) >= gap_start + 5


def test_the_simulated_clock_paces_the_stream(tmp_path: Path) -> None:
    """Two tweets 10 simulated seconds apart at speedup 20 arrive at least 0.5 s apart."""
    paced = _write(tmp_path / "paced.jsonl", [_payload(1, "a"), _payload(2, "b", second=10)])
    with serve([paced], speedup=20, once=True) as server:
        arrivals = []
        with _stream(server, SAMPLE_STREAM_PATH) as response:
            for line in response.iter_lines():
                if line:
                    arrivals.append(time.monotonic())
        assert len(arrivals) == 2
        assert arrivals[1] - arrivals[0] >= 0.45


def test_once_ends_the_streams_when_the_files_are_played(server: XapiServer) -> None:
    assert not server.wait(0.1)  # nothing played before the first client connects
    assert len(_lines(_stream(server, SAMPLE_STREAM_PATH))) == len(LINES)
    assert server.wait(10)
    assert server.played == len(LINES)


def test_a_taken_port_is_an_error_in_words(server: XapiServer, sample_file: Path) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    with pytest.raises(XApiError, match=f"Cannot listen on 127.0.0.1:{port}.*--port"):
        serve([sample_file], port=port)
