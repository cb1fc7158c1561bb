"""`live` for real against the local X API server (issue 21): tweepy, real Kafka, the views.

`live` runs as the CLI does (a subprocess stopped by SIGTERM, as Ctrl-C would); the server
records what it sent, so Kafka can be compared with exactly what went over the wire. The
expected values come from `_expected`, an independent reading of the file, never from the
code under test.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from helpers import all_records, as_dict

from lambda_demo.ingestion import sample
from lambda_demo.ingestion.clock import to_millis, wait_until
from lambda_demo.ingestion.live import RULE_TAG
from lambda_demo.ingestion.replay import read_lines, replay
from lambda_demo.ingestion.xapi import OPERATIONAL_DISCONNECT, RULES_PATH, XapiServer, serve
from lambda_demo.serving import reads
from lambda_demo.settings import Settings, isolated_settings
from lambda_demo.speed.run import run_speed

pytestmark = pytest.mark.integration

CLOSED = "was closed by the server"  # what live reports when a stream ends under it
# Lines a real stream (or a broken proxy) sends that are not tweets, placed between tweets.
HOSTILE = [
    b"",
    b"   ",
    b'{"errors":[{"title":"operational-disconnect","type":"about:blank"}]}',
    b"[1, 2]",
    b'{"data": {"id": "12x"}}',
    b"\xff\xfe not UTF-8",
    b'{"data": ',
]


def _stream_file(path: Path, *, tweets: int, days: int, seed: int) -> Path:
    """A generated stream (duplicates, late and malformed lines) with hostile lines mixed in."""
    lines = list(sample.generate(tweets=tweets, days=days, seed=seed))
    step = len(lines) // (len(HOSTILE) + 1)
    for i, hostile in enumerate(HOSTILE, 1):
        lines.insert(i * step, hostile)
    # A lone surrogate escape in a valid tweet: the server must not turn it into bad UTF-8.
    record = json.loads(lines[1])
    record["data"]["text"] = "\ud800 lone"
    lines[1] = json.dumps(record).encode()
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@dataclass(frozen=True)
class _Tweet:
    tweet_id: str
    location: str
    followers: int
    likes: int
    retweets: int


def _expected(raw: bytes) -> _Tweet | bool | None:
    """Independently of the contract: the tweet in a line, False if invalid, None if blank."""
    if not raw.strip():
        return None
    try:
        record = json.loads(raw.decode("utf-8"))
        data = record["data"]
        datetime.strptime(data["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
        users = {u["id"]: u for u in record["includes"]["users"]}
        user = users[data["author_id"]]
        counts = [
            data["public_metrics"]["retweet_count"],
            data["public_metrics"]["like_count"],
            user["public_metrics"]["followers_count"],
        ]
        ok = (
            re.fullmatch("[0-9]{1,19}", data["id"]) is not None
            and int(data["id"]) < 2**63
            and re.fullmatch("[0-9]+", data["author_id"]) is not None
            and all(type(c) is int and 0 <= c < 2**31 for c in counts)
            and isinstance(data["text"], str)
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return False
    if not ok:
        return False
    location = user.get("location")
    key = location.strip() if isinstance(location, str) else ""
    return _Tweet(data["id"], key or "(unknown)", counts[2], counts[1], counts[0])


def _expected_view(tweets: list[_Tweet]) -> dict[str, list[int]]:
    """Per location: tweets, followers, likes, retweets, each tweet counted once."""
    seen: set[str] = set()
    view: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for t in tweets:
        if t.tweet_id not in seen:
            seen.add(t.tweet_id)
            row = view[t.location]
            for i, value in enumerate((1, t.followers, t.likes, t.retweets)):
                row[i] += value
    return dict(view)


def _as_tweet(value: bytes) -> _Tweet:
    flat = json.loads(value)
    return _Tweet(
        flat["tweet_id"],
        flat["location"],
        flat["followers_count"],
        flat["like_count"],
        flat["retweet_count"],
    )


class _Cli:
    """A `lambda-demo` subprocess whose stderr is read as it comes, to wait for its reports."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lambda_demo.cli", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.stderr.append(line)
                self._changed.notify_all()

    def reported(self, text: str) -> int:
        return sum(text in line for line in self.stderr)

    def wait_for(self, text: str, *, times: int = 1, timeout: float = 120) -> None:
        with self._changed:
            self._changed.wait_for(
                lambda: self.reported(text) >= times or self.process.poll() is not None, timeout
            )
        assert self.reported(text) >= times, "".join(self.stderr)

    def stop(self) -> str:
        """SIGTERM, as ``docker stop`` or Ctrl-C; returns stdout after a clean exit."""
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=120)
        assert self.process.returncode == 0, "".join(self.stderr)
        return out


def _live_env(cli_env: dict[str, str], url: str, **more: str) -> dict[str, str]:
    return {
        **cli_env,
        "LAMBDA_DEMO_X_API_URL": url,
        "LAMBDA_DEMO_X_BEARER_TOKEN": "any-token-will-do",
        **more,
    }


def _reason(record) -> str:
    return dict(record.headers)["reason"].decode()


def test_live_produces_exactly_what_the_server_sent_like_replay_would(
    settings: Settings, cli_env: dict[str, str], stack_home: Path, tmp_path: Path
) -> None:
    path = _stream_file(tmp_path / "stream.jsonl", tweets=1500, days=1, seed=5)
    lines = list(read_lines(path))
    started = to_millis(datetime.now(UTC))
    with serve([path], once=True) as server:
        live = _Cli(_live_env(cli_env, server.url), "live", "--sample")
        assert server.wait(120)
        live.wait_for(CLOSED)  # every line before the close has been handled
        counts = json.loads(live.stop())
    ended = to_millis(datetime.now(UTC))
    assert server.sent == list(range(len(lines)))  # one connection, never interrupted

    tweets = all_records(settings, settings.topic)
    dead = all_records(settings, settings.dlq_topic)  # one partition: in the order received
    assert counts == {
        "read": len(tweets) + len(dead),
        "produced": len(tweets),
        "dead_lettered": len(dead),
    }
    for record in tweets + dead:
        assert started <= record.timestamp <= ended, "live stamps the wall clock on arrival"
    for partition in {r.partition for r in tweets}:
        stamps = [r.timestamp for r in tweets if r.partition == partition]
        assert stamps == sorted(stamps)

    # The same file through replay, into topics of its own: same records, same reasons.
    other = isolated_settings(stack_home, prefix="replay")
    replay([path], settings=other, progress=False)
    replayed_reasons = {
        int(dict(r.headers)["replay-line"]): _reason(r) for r in all_records(other, other.dlq_topic)
    }
    assert [_reason(r) for r in dead] == [
        replayed_reasons[n] for n in server.sent if n in replayed_reasons
    ]
    replayed = all_records(other, other.topic)
    assert Counter(r.value for r in tweets) == Counter(r.value for r in replayed)

    # And both equal an independent reading of the file.
    expected = [_expected(line) for line in lines]
    assert Counter(_as_tweet(r.value) for r in tweets) == Counter(
        t for t in expected if isinstance(t, _Tweet)
    )
    assert len(dead) == expected.count(False)


def test_live_survives_a_disconnect_and_keeps_other_programs_rules(
    settings: Settings, cli_env: dict[str, str], tmp_path: Path
) -> None:
    path = _stream_file(tmp_path / "stream.jsonl", tweets=1500, days=1, seed=6)
    lines = list(read_lines(path))
    wanted = ["#Kafka OR #ApacheSpark", "coffee lang:en"]
    with serve([path], speedup=86_400 / 8, once=True) as server:  # a day in 8 seconds
        _add_rule(server, "#Python", "another-app")
        _add_rule(server, "old topic", RULE_TAG)
        env = _live_env(cli_env, server.url, LAMBDA_DEMO_FILTER_RULES=json.dumps(wanted))
        live = _Cli(env, "live")
        # live syncs its rules before it connects, so they are in place once lines flow
        wait_until(
            lambda: len(server.sent) >= 20, 120, "20 lines sent to live", interval_seconds=0.05
        )
        assert {(r["value"], r.get("tag")) for r in server.rules} == {
            ("#Python", "another-app"),
            *((value, RULE_TAG) for value in wanted),
        }
        assert server.disconnect() == 1
        live.wait_for("reconnected")
        assert server.wait(120)
        live.wait_for(CLOSED, times=2)
        counts = json.loads(live.stop())
    sent = server.sent
    assert server.connections >= 2
    assert sent.count(None) == 1 and len(sent) > sent.index(None) + 1, "tweets after reconnect"
    assert len(set(sent) - {None}) < len(lines), "a filtered stream sends the matches only"
    for number in sent:
        if number is not None and isinstance(_expected(lines[number]), _Tweet):
            assert _matches_a_rule(lines[number]), lines[number][:200]

    tweets = all_records(settings, settings.topic)
    dead = all_records(settings, settings.dlq_topic)
    expected = [_expected(lines[n]) for n in sent if n is not None]
    assert Counter(_as_tweet(r.value) for r in tweets) == Counter(
        t for t in expected if isinstance(t, _Tweet)
    )
    # The invalid lines sent, and the API's disconnect message, in the order they came.
    farewell = [r for r in dead if r.value == OPERATIONAL_DISCONNECT]
    assert len(farewell) == 1 and _reason(farewell[0]) == "missing_data"
    assert len(dead) == expected.count(False) + 1
    assert counts["produced"] == len(tweets) and counts["dead_lettered"] == len(dead)
    assert live.reported("operational disconnect") >= 1


def _add_rule(server: XapiServer, value: str, tag: str) -> None:
    answer = requests.post(
        server.url + RULES_PATH,
        json={"add": [{"value": value, "tag": tag}]},
        headers={"Authorization": "Bearer another-app"},
        timeout=10,
    )
    assert answer.json()["meta"]["summary"]["created"] == 1


def _matches_a_rule(raw: bytes) -> bool:
    """The rules of the test above, read independently: #Kafka, #ApacheSpark, #Python, or the
    word coffee in English."""
    data = json.loads(raw)["data"]
    tags = {h["tag"].lower() for h in data.get("entities", {}).get("hashtags", [])}
    words = re.findall(r"\w+", data["text"].lower())
    return bool(tags & {"kafka", "apachespark", "python"}) or (
        "coffee" in words and data["lang"] == "en"
    )


def test_must_show_live_sample_against_xapi_serve_once_then_speed_and_check(
    settings: Settings, cli_env: dict[str, str], tmp_path: Path, spark
) -> None:
    """Issue 21's must-show, with the CLI as a learner types it."""
    path = _stream_file(tmp_path / "F.jsonl", tweets=2000, days=2, seed=21)
    lines = list(read_lines(path))
    server = _Cli(cli_env, "xapi", "serve", "--once", "--speedup", "0", "--file", str(path))
    assert server.process.stdout is not None
    banner = server.process.stdout.readline()
    url = re.search(r"http://127\.0\.0\.1:\d+", banner).group(0)

    live = _Cli(_live_env(cli_env, url), "live", "--sample")
    assert server.process.wait(timeout=180) == 0, "".join(server.stderr)
    summary = server.process.stdout.read()
    assert f"played {len(lines)} lines; sent {len(lines)} over 1 stream" in summary
    live.wait_for(CLOSED)
    counts = json.loads(live.stop())

    expected = [_expected(line) for line in lines]
    valid = [t for t in expected if isinstance(t, _Tweet)]
    tweets = all_records(settings, settings.topic)
    assert Counter(_as_tweet(r.value) for r in tweets) == Counter(valid)
    assert len(valid) > len({t.tweet_id for t in valid}), "F has duplicate deliveries"
    dead = all_records(settings, settings.dlq_topic)
    assert len(dead) == expected.count(False) >= len(HOSTILE) - 2
    assert all(_reason(r) and dict(r.headers)["detail"] for r in dead)
    assert counts == {
        "read": len(lines) - expected.count(None),
        "produced": len(valid),
        "dead_lettered": len(dead),
    }

    run_speed(settings, once=True)
    assert as_dict(reads.serving_view(settings)) == _expected_view(valid)
    done = subprocess.run(
        [sys.executable, "-m", "lambda_demo.cli", "check", "--json"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["tweets"] == len({t.tweet_id for t in valid})
