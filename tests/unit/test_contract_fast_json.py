"""The contract's fast paths must reach the verdicts of its plain ones.

orjson reads the contract's records faster; `json` must still decide every edge case.

The contract reads a line with orjson when that certainly gives what ``json`` gives. These
tests compare every verdict with the one ``json`` alone reaches (the fast reading switched
off), on the edge cases where the two libraries differ and on mutated records.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from unittest import mock

import pytest
import tweepy

from lambda_demo import contract
from lambda_demo.contract import FlatTweet
from lambda_demo.ingestion.clock import format_utc

FLAT = FlatTweet("12", "2024-03-01T00:00:00.000Z", "7", "Lisbon", 4, 5, 6, ("a",), "pt", "t")
API = (
    b'{"data":{"id":"12","text":"t","author_id":"7","created_at":"2024-03-01T00:00:00.000Z",'
    b'"public_metrics":{"retweet_count":1,"like_count":2}},"includes":{"users":[{"id":"7",'
    b'"name":"n","username":"u","location":"Lisbon","public_metrics":{"followers_count":3}}]}}'
)
EDGES = [
    FLAT.to_json_bytes().replace(b'"followers_count":4', b'"followers_count":18446744073709551616'),
    FLAT.to_json_bytes().replace(b'"like_count":5', b'"like_count":-9223372036854775809'),
    FLAT.to_json_bytes().replace(b'"like_count":5', b'"like_count":' + b"9" * 5000),
    FLAT.to_json_bytes().replace(b'"v":1', b'"v":18446744073709551617'),
    FLAT.to_json_bytes().replace(b'"Lisbon"', b'"\\ud800"'),
    FLAT.to_json_bytes().replace(b'"Lisbon"', b'"\xed\xa0\x80"'),
    FLAT.to_json_bytes().replace(b'"t"}', b'"t","x":' + b"[" * 990 + b"]" * 990 + b"}"),
    FLAT.to_json_bytes().replace(b'"like_count":5', b'"like_count":NaN'),
    FLAT.to_json_bytes().replace(b'"like_count":5', b'"like_count":1e400'),
    FLAT.to_json_bytes().replace(b'"like_count":5', b'"like_count":5.0'),
    b"\xef\xbb\xbf" + FLAT.to_json_bytes(),
    b"   ",
    b"",
    b"null",
    b"[1]",
    API,
    API.replace(b'"followers_count":3', b'"followers_count":99999999999999999999'),
    API.replace(b'"Lisbon"', b'"\\udfff"'),
]


def _json_only(parse, raw: bytes):
    with mock.patch.object(contract, "_fast_object", lambda raw: None):
        return parse(raw)


@pytest.mark.parametrize("raw", EDGES)
@pytest.mark.parametrize("parse", [contract.parse_flat, contract.parse_api_tweet])
def test_the_fast_reading_gives_json_verdicts_on_edge_cases(parse, raw: bytes) -> None:
    assert parse(raw) == _json_only(parse, raw)


def test_the_fast_reading_gives_json_verdicts_on_mutated_records() -> None:
    rnd = random.Random(20)
    alphabet = b'{}[]":,0123456789-.eE \\ntrufalsn\x00\xff\xed\xa0\x80\xc3u'
    different = []
    for parse, seed in (
        (contract.parse_flat, FLAT.to_json_bytes()),
        (contract.parse_api_tweet, API),
    ):
        for _ in range(3000):
            raw = bytearray(seed)
            for _ in range(rnd.randint(1, 4)):
                i = rnd.randrange(len(raw) + 1)
                if rnd.random() < 0.5 and raw:
                    del raw[i : i + rnd.randint(1, 3)]
                else:
                    raw[i:i] = bytes(rnd.choice(alphabet) for _ in range(rnd.randint(1, 3)))
            if parse(bytes(raw)) != _json_only(parse, bytes(raw)):
                different.append(bytes(raw))
    assert different == []


def test_the_fast_reading_is_used_for_ordinary_records() -> None:
    with mock.patch.object(contract.json, "loads", side_effect=AssertionError("json used")):
        assert contract.parse_flat(FLAT.to_json_bytes()) == FLAT


@pytest.mark.parametrize(
    "moment",
    [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(999, 3, 4, 5, 6, 7, 123456, tzinfo=UTC),
        datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
)
def test_tweepy_reads_back_every_normalised_timestamp(moment: datetime) -> None:
    """Why the contract need not hand tweepy the tweet's ``created_at``: tweepy's parser
    reads the normalised form back as the same instant, so it could never refuse it."""
    stamp = format_utc(moment)
    assert format_utc(tweepy.utils.parse_datetime(stamp)) == stamp
