"""The ingestion contract, rule by rule: every invalid kind, every location edge case."""

from __future__ import annotations

import contextlib
import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import tweepy
from hypothesis import given
from hypothesis import strategies as st

from lambda_demo import contract
from lambda_demo.contract import (
    UNKNOWN_LOCATION,
    FlatTweet,
    InvalidRecord,
    Rejected,
    due_time,
    ingest_time,
    location_key,
    parse_api_tweet,
    parse_flat,
    parse_record,
)

MISSING = object()  # marks a key to delete from the template


def api_tweet(**overrides: Any) -> dict[str, Any]:
    """A valid filtered-stream message; ``overrides`` take dotted paths, MISSING deletes."""
    message: dict[str, Any] = {
        "data": {
            "id": "1859000000000000001",
            "text": "Lambda time #Kafka #Spark",
            "author_id": "42",
            "created_at": "2026-11-01T20:15:00.000Z",
            "lang": "en",
            "edit_history_tweet_ids": ["1859000000000000001"],
            "public_metrics": {
                "retweet_count": 2,
                "reply_count": 0,
                "like_count": 7,
                "quote_count": 0,
            },
            "entities": {
                "hashtags": [
                    {"start": 12, "end": 18, "tag": "Kafka"},
                    {"start": 19, "end": 25, "tag": "Spark"},
                ]
            },
        },
        "includes": {
            "users": [
                {
                    "id": "42",
                    "username": "ada",
                    "name": "Ada",
                    "location": "London",
                    "public_metrics": {"followers_count": 1000, "following_count": 5},
                }
            ]
        },
        "matching_rules": [{"id": "1", "tag": "data"}],
    }
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = message
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is MISSING:
            del node[leaf]
        else:
            node[leaf] = value
    return message


def encode(message: object) -> bytes:
    return json.dumps(message, ensure_ascii=False).encode("utf-8")


def parse(**overrides: Any) -> FlatTweet | Rejected | None:
    return parse_api_tweet(encode(api_tweet(**overrides)))


def reason(result: object) -> str:
    assert isinstance(result, Rejected), f"expected a rejection, got {result!r}"
    assert result.detail
    return result.reason


def valid(result: object) -> FlatTweet:
    assert isinstance(result, FlatTweet), f"expected a tweet, got {result!r}"
    return result


# --- valid records -------------------------------------------------------------------------


def test_valid_tweet_becomes_flat_record() -> None:
    assert parse() == FlatTweet(
        tweet_id="1859000000000000001",
        created_at="2026-11-01T20:15:00.000Z",
        author_id="42",
        location="London",
        followers_count=1000,
        like_count=7,
        retweet_count=2,
        hashtags=("Kafka", "Spark"),
        lang="en",
        text="Lambda time #Kafka #Spark",
    )


def test_str_input_is_parsed_like_bytes() -> None:
    assert parse_api_tweet(json.dumps(api_tweet())) == parse()


def test_surrounding_whitespace_on_the_line_is_fine() -> None:
    assert parse_api_tweet(b"  " + encode(api_tweet()) + b"\r\n") == parse()


def test_author_is_found_among_several_users() -> None:
    other = {"id": "7", "username": "bob", "name": "Bob", "location": "Paris"}
    users = ["junk", other, api_tweet()["includes"]["users"][0]]
    assert valid(parse(**{"includes.users": users})).location == "London"


def test_optional_fields_may_be_absent() -> None:
    flat = valid(
        parse(
            **{
                "data.lang": MISSING,
                "data.entities": MISSING,
                "data.edit_history_tweet_ids": MISSING,
                "matching_rules": MISSING,
            }
        )
    )
    assert (flat.lang, flat.hashtags) == (None, ())


def test_null_lang_and_malformed_hashtags_are_tolerated() -> None:
    hashtags = [{"tag": "ok"}, {"tag": 5}, "str", {"start": 1}, {"tag": "二"}]
    flat = valid(parse(**{"data.lang": None, "data.entities.hashtags": hashtags}))
    assert (flat.lang, flat.hashtags) == (None, ("ok", "二"))


@pytest.mark.parametrize("entities", [None, [], "x", {"hashtags": None}, {"hashtags": {}}])
def test_odd_entities_mean_no_hashtags(entities: object) -> None:
    assert valid(parse(**{"data.entities": entities})).hashtags == ()


def test_nul_escapes_and_unicode_in_text_are_kept() -> None:
    text = "naïve \u0000 café 🎉 東京 \n ;\"'"
    assert valid(parse(**{"data.text": text})).text == text


def test_megabyte_text_is_accepted() -> None:
    text = "x" * 1_000_000
    assert valid(parse(**{"data.text": text})).text == text


def test_lone_surrogate_escape_becomes_replacement_character() -> None:
    raw = encode(api_tweet()).replace(b"Lambda time", b"Lambda \\ud800 time")
    flat = valid(parse_api_tweet(raw))
    assert flat.text == "Lambda \ufffd time #Kafka #Spark"
    assert parse_flat(flat.to_json_bytes()) == flat


def test_parsing_goes_through_tweepy_models(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []

    class SpyTweet(tweepy.Tweet):
        def __init__(self, data: dict[str, Any]) -> None:
            built.append("tweet")
            super().__init__(data)

    class SpyUser(tweepy.User):
        def __init__(self, data: dict[str, Any]) -> None:
            built.append("user")
            super().__init__(data)

    monkeypatch.setattr(contract.tweepy, "Tweet", SpyTweet)
    monkeypatch.setattr(contract.tweepy, "User", SpyUser)
    valid(parse())
    assert built == ["tweet", "user"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"includes.users.0.username": MISSING}, "model_rejected"),
        ({"includes.users.0.name": MISSING}, "model_rejected"),
        ({"data.conversation_id": "not-a-number"}, "model_rejected"),
        ({"data.referenced_tweets": ["x"]}, "model_rejected"),
        ({"data.edit_controls": []}, "model_rejected"),
        ({"data.text": MISSING}, "bad_text"),
        ({"data.text": 5}, "bad_text"),
        ({"data.text": None}, "bad_text"),
    ],
)
def test_what_tweepy_cannot_model_is_rejected(overrides: dict[str, Any], expected: str) -> None:
    assert reason(parse(**overrides)) == expected


# --- blank lines, encoding, JSON -----------------------------------------------------------


@pytest.mark.parametrize("line", [b"", b" ", b"\r\n", b"\t \n", "", "  \n"])
def test_blank_lines_are_skipped(line: bytes | str) -> None:
    assert parse_api_tweet(line) is None


@pytest.mark.parametrize(
    "line",
    [
        b"\xff",
        b'{"data": "caf\xe9"}',  # Latin-1
        b'{"data": "\xed\xa0\x80"}',  # an encoded surrogate
        b'{"data": "\xc0\xaf"}',  # overlong encoding
        b"\xfe\xff\x00{",  # UTF-16 with a BOM
        encode(api_tweet())[:-30] + b"\x80" + encode(api_tweet())[-30:],
    ],
)
def test_invalid_utf8_is_rejected(line: bytes) -> None:
    assert reason(parse_api_tweet(line)) == "not_utf8"


@pytest.mark.parametrize(
    "line",
    [
        b"{",
        encode(api_tweet())[:-1],
        b"not json",
        b"{'data': {}}",
        b'{"data": NaN}',
        b'{"data": {"id": Infinity}}',
        b"[" * 100_000,
        b'{"a":' * 100_000,
        b"\x00",
        encode(api_tweet()).replace(b"Lambda", b"Lam\x00bda"),  # raw NUL inside a string
        b'{"data": {"id": "1"}}\x00',
        b'{"data": {}, "big": ' + b"9" * 5000 + b"}",  # beyond int() string limits
        b"\xef\xbb\xbf" + encode(api_tweet()),  # a UTF-8 byte order mark
        b'{"data": {}} {"data": {}}',
    ],
)
def test_broken_json_is_rejected(line: bytes) -> None:
    assert reason(parse_api_tweet(line)) == "not_json"


@pytest.mark.parametrize("line", [b"[]", b"[1, 2]", b'"tweet"', b"42", b"null", b"true"])
def test_json_that_is_not_an_object_is_rejected(line: bytes) -> None:
    assert reason(parse_api_tweet(line)) == "not_object"


@pytest.mark.parametrize(
    "message",
    [
        {},
        {"data": None},
        {"data": []},
        {"data": "tweet"},
        {"errors": [{"title": "operational-disconnect"}]},
        {"includes": {"users": []}},
    ],
)
def test_missing_data_is_rejected(message: dict[str, Any]) -> None:
    assert reason(parse_api_tweet(encode(message))) == "missing_data"


# --- ids -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tweet_id",
    ["", "12a", "١٢٣", "²", "１２３", " 123", "123 ", "123\n", "-1", "+1", "1.0", "1e5", 123, None],
)
def test_non_digit_ids_are_rejected(tweet_id: object) -> None:
    assert reason(parse(**{"data.id": tweet_id})) == "bad_id"


def test_missing_id_is_rejected() -> None:
    assert reason(parse(**{"data.id": MISSING})) == "bad_id"


@pytest.mark.parametrize(
    "tweet_id",
    [str(2**63), "9999999999999999999", "1" * 20, "0" * 19 + "1", "1" * 1_000_000],
)
def test_ids_that_do_not_fit_a_bigint_are_rejected(tweet_id: str) -> None:
    assert reason(parse(**{"data.id": tweet_id})) == "id_out_of_range"


@pytest.mark.parametrize("tweet_id", ["0", "7", "0007", str(2**63 - 1), "1" * 19])
def test_ids_up_to_the_bigint_limit_are_kept_verbatim(tweet_id: str) -> None:
    assert valid(parse(**{"data.id": tweet_id})).tweet_id == tweet_id


# --- created_at ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("created_at", "normalised"),
    [
        ("2026-11-01T20:15:00.000Z", "2026-11-01T20:15:00.000Z"),
        ("2026-11-01T20:15:00Z", "2026-11-01T20:15:00.000Z"),
        ("2026-11-01T20:15:00+00:00", "2026-11-01T20:15:00.000Z"),
        ("2026-11-01T20:15:00.1Z", "2026-11-01T20:15:00.100Z"),
        ("2026-11-01T20:15:00.123456789Z", "2026-11-01T20:15:00.123Z"),
        ("2026-11-01T20:15:00.999999+00:00", "2026-11-01T20:15:00.999Z"),
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000Z"),
        ("9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z"),
        ("2028-02-29T12:00:00Z", "2028-02-29T12:00:00.000Z"),
    ],
)
def test_created_at_is_normalised_to_milliseconds(created_at: str, normalised: str) -> None:
    assert valid(parse(**{"data.created_at": created_at})).created_at == normalised


@pytest.mark.parametrize(
    "created_at",
    [
        "2026-11-01T20:15:00.000+02:00",
        "2026-11-01T20:15:00-00:00",
        "2026-11-01T20:15:00",
        "2026-11-01 20:15:00Z",
        "2026-11-01t20:15:00z",
        "2026-11-01T20:15Z",
        "2026-11-01",
        "2026-13-01T00:00:00Z",
        "2026-02-29T00:00:00Z",
        "2026-11-01T24:00:00Z",
        "2026-11-01T20:15:60Z",
        "0000-01-01T00:00:00Z",
        "10000-01-01T00:00:00Z",
        "２０２６-11-01T20:15:00Z",
        "2026-11-01T20:15:00.Z",
        "2026-11-01T20:15:00.0000000000Z",
        "Sun Nov 01 20:15:00 +0000 2026",
        "",
        1793564100,
        None,
    ],
)
def test_bad_created_at_is_rejected(created_at: object) -> None:
    assert reason(parse(**{"data.created_at": created_at})) == "bad_created_at"


def test_missing_created_at_is_rejected() -> None:
    assert reason(parse(**{"data.created_at": MISSING})) == "bad_created_at"


# --- author ----------------------------------------------------------------------------------


@pytest.mark.parametrize("author_id", [42, None, "", "4 2", "abc", "٤٢"])
def test_author_id_must_be_a_digit_string(author_id: object) -> None:
    assert reason(parse(**{"data.author_id": author_id})) == "bad_author_id"


@pytest.mark.parametrize(
    "overrides",
    [
        {"data.author_id": "43"},
        {"includes": MISSING},
        {"includes": None},
        {"includes": []},
        {"includes.users": MISSING},
        {"includes.users": []},
        {"includes.users": {"42": {}}},
        {"includes.users": ["42"]},
        {"includes.users.0.id": 42},
        {"includes.users.0.id": "042"},
        {"includes.users.0.id": MISSING},
    ],
)
def test_author_must_be_in_includes(overrides: dict[str, Any]) -> None:
    assert reason(parse(**overrides)) == "author_not_in_includes"


# --- counts ----------------------------------------------------------------------------------

COUNT_FIELDS = [
    ("data.public_metrics.retweet_count", "bad_retweet_count"),
    ("data.public_metrics.like_count", "bad_like_count"),
    ("includes.users.0.public_metrics.followers_count", "bad_followers_count"),
]
# Counts must be below 2**31, so sums of them never overflow a 64-bit column.
BAD_COUNTS = [
    True,
    False,
    1.0,
    0.0,
    1.5,
    "1",
    "0",
    -1,
    2**31,
    2**32,
    2**63 - 1,
    2**63,
    2**64,
    10**30,
    None,
    [1],
    {},
]


@pytest.mark.parametrize(("path", "expected"), COUNT_FIELDS)
@pytest.mark.parametrize("value", BAD_COUNTS, ids=repr)
def test_counts_must_be_json_integers_in_0_to_2_pow_31(
    path: str, expected: str, value: object
) -> None:
    assert reason(parse(**{path: value})) == expected


@pytest.mark.parametrize(("path", "expected"), COUNT_FIELDS)
def test_missing_counts_are_rejected(path: str, expected: str) -> None:
    assert reason(parse(**{path: MISSING})) == expected


def with_number(path: str, number: bytes) -> bytes:
    """The template with a JSON number spelled exactly as given at ``path``."""
    return encode(api_tweet(**{path: "PLACEHOLDER"})).replace(b'"PLACEHOLDER"', number)


@pytest.mark.parametrize(("path", "expected"), COUNT_FIELDS)
@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"1E2", b"1.0", b"-0.0"])
def test_json_numbers_that_are_not_integers_are_rejected(
    path: str, expected: str, number: bytes
) -> None:
    assert reason(parse_api_tweet(with_number(path, number))) == expected


@pytest.mark.parametrize(("path", "_reason"), COUNT_FIELDS)
def test_minus_zero_is_the_json_integer_zero(path: str, _reason: str) -> None:
    valid(parse_api_tweet(with_number(path, b"-0")))


@pytest.mark.parametrize("value", [0, 1, 2**31 - 1])
def test_count_boundaries_are_accepted(value: int) -> None:
    flat = valid(
        parse(
            **{
                "data.public_metrics.retweet_count": value,
                "data.public_metrics.like_count": value,
                "includes.users.0.public_metrics.followers_count": value,
            }
        )
    )
    assert (flat.retweet_count, flat.like_count, flat.followers_count) == (value, value, value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"data.public_metrics": MISSING}, "bad_retweet_count"),
        ({"data.public_metrics": [2, 7]}, "bad_retweet_count"),
        ({"includes.users.0.public_metrics": MISSING}, "bad_followers_count"),
        ({"includes.users.0.public_metrics": None}, "bad_followers_count"),
    ],
)
def test_missing_metrics_objects_are_rejected(overrides: dict[str, Any], expected: str) -> None:
    assert reason(parse(**overrides)) == expected


def test_first_broken_rule_is_the_reason() -> None:
    everything_wrong = {
        "data.id": "x",
        "data.created_at": "x",
        "data.author_id": "x",
        "data.public_metrics.retweet_count": "x",
        "data.public_metrics.like_count": "x",
        "includes.users.0.public_metrics.followers_count": "x",
        "data.text": 1,
    }
    order = ["bad_id", "bad_created_at", "bad_author_id"]
    order += ["bad_retweet_count", "bad_like_count", "bad_followers_count", "bad_text"]
    for expected, path in zip(order, list(everything_wrong), strict=True):
        assert reason(parse(**everything_wrong)) == expected
        del everything_wrong[path]  # fix this one; the next rule in order becomes the reason
    valid(parse(**everything_wrong))


# --- location key ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("London", "London"),
        (" London ", "London"),
        ("\tParis\n", "Paris"),
        ("\u00a0Berlin\u3000", "Berlin"),
        ("  San José, CR  ", "San José, CR"),
        ("Planet Earth 🌍", "Planet Earth 🌍"),
        ("🏳️‍🌈", "🏳️‍🌈"),
        ("東京都 渋谷区", "東京都 渋谷区"),
        ("Paris; France", "Paris; France"),
        ('The "Big Apple"', 'The "Big Apple"'),
        ("a,b;c", "a,b;c"),
        ("Line one\nLine two", "Line one\nLine two"),
        (" \nBerlin\nGermany\n ", "Berlin\nGermany"),
        ("lowercase", "lowercase"),
        ("\ud800x", "\ufffdx"),
        ("", UNKNOWN_LOCATION),
        ("   ", UNKNOWN_LOCATION),
        ("\n\t\r", UNKNOWN_LOCATION),
        ("\u3000\u00a0", UNKNOWN_LOCATION),
        (None, UNKNOWN_LOCATION),
        (0, UNKNOWN_LOCATION),
        (42, UNKNOWN_LOCATION),
        (True, UNKNOWN_LOCATION),
        (["London"], UNKNOWN_LOCATION),
        ({"city": "London"}, UNKNOWN_LOCATION),
        (b"London", UNKNOWN_LOCATION),
    ],
)
def test_location_key(raw: object, key: str) -> None:
    assert location_key(raw) == key


@pytest.mark.parametrize(
    ("location", "key"),
    [
        (MISSING, UNKNOWN_LOCATION),
        (None, UNKNOWN_LOCATION),
        ("", UNKNOWN_LOCATION),
        ("  \t ", UNKNOWN_LOCATION),
        (17, UNKNOWN_LOCATION),
        ({"name": "London"}, UNKNOWN_LOCATION),
        ("  London\n", "London"),
        ("Paris; France", "Paris; France"),
        ("Berlin\nGermany", "Berlin\nGermany"),
        ("🇧🇷", "🇧🇷"),
    ],
)
def test_location_key_through_the_parser(location: object, key: str) -> None:
    assert valid(parse(**{"includes.users.0.location": location})).location == key


# --- the flat record -------------------------------------------------------------------------

FLAT = FlatTweet(
    tweet_id="1859000000000000001",
    created_at="2026-11-01T20:15:00.000Z",
    author_id="42",
    location="Zürich; CH 🇨🇭",
    followers_count=10,
    like_count=2,
    retweet_count=0,
    hashtags=("a", "東京"),
    lang=None,
    text='say "hi"\n',
)


def flat_record(**overrides: Any) -> bytes:
    record = json.loads(FLAT.to_json_bytes())
    for key, value in overrides.items():
        if value is MISSING:
            del record[key]
        else:
            record[key] = value
    return json.dumps(record).encode()


def test_flat_record_is_compact_utf8_json_with_fixed_keys() -> None:
    assert (
        FLAT.to_json_bytes()
        == (
            '{"v":1,"tweet_id":"1859000000000000001","created_at":"2026-11-01T20:15:00.000Z",'
            '"author_id":"42","location":"Zürich; CH 🇨🇭","followers_count":10,"like_count":2,'
            '"retweet_count":0,"hashtags":["a","東京"],"lang":null,"text":"say \\"hi\\"\\n"}'
        ).encode()
    )


def test_flat_round_trip() -> None:
    assert parse_flat(FLAT.to_json_bytes()) == FLAT
    assert FlatTweet.from_json_bytes(FLAT.to_json_bytes()) == FLAT


def test_parsed_api_tweet_round_trips_through_flat() -> None:
    flat = valid(parse(**{"includes.users.0.location": "  Kraków 🐉; PL\n"}))
    assert parse_flat(flat.to_json_bytes()) == flat


FLAT_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"))
FLAT_COUNT = st.integers(min_value=0, max_value=2**31 - 1)


@given(
    st.builds(
        FlatTweet,
        tweet_id=st.integers(min_value=0, max_value=2**63 - 1).map(str),
        created_at=FLAT_TEXT,
        author_id=FLAT_TEXT,
        location=FLAT_TEXT,
        followers_count=FLAT_COUNT,
        like_count=FLAT_COUNT,
        retweet_count=FLAT_COUNT,
        hashtags=st.lists(FLAT_TEXT, max_size=4).map(tuple),
        lang=st.none() | FLAT_TEXT,
        text=FLAT_TEXT,
    )
)
def test_any_flat_tweet_round_trips(flat: FlatTweet) -> None:
    assert parse_flat(flat.to_json_bytes()) == flat


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "null_value"),
        (b"\xff", "not_utf8"),
        (b"", "not_json"),
        (b"{", "not_json"),
        (b"[" * 100_000, "not_json"),
        (b'{"v": NaN}', "not_json"),
        (b"[]", "not_object"),
        (b'"x"', "not_object"),
        (flat_record(v=MISSING), "bad_version"),
        (flat_record(v=2), "bad_version"),
        (flat_record(v=0), "bad_version"),
        (flat_record(v=True), "bad_version"),
        (flat_record(v=1.0), "bad_version"),
        (flat_record(v="1"), "bad_version"),
        (flat_record(tweet_id=MISSING), "bad_id"),
        (flat_record(tweet_id=""), "bad_id"),
        (flat_record(tweet_id=1859000000000000001), "bad_id"),
        (flat_record(tweet_id="١٢٣"), "bad_id"),
        (flat_record(tweet_id="12 "), "bad_id"),
        (flat_record(tweet_id="1" * 20), "id_out_of_range"),
        (flat_record(tweet_id=str(2**63)), "id_out_of_range"),
        (flat_record(created_at=MISSING), "bad_created_at"),
        (flat_record(created_at=None), "bad_created_at"),
        (flat_record(created_at=1793564100000), "bad_created_at"),
        (flat_record(location=MISSING), "bad_location"),
        (flat_record(location=None), "bad_location"),
        (flat_record(location=["London"]), "bad_location"),
        (flat_record(followers_count=MISSING), "bad_followers_count"),
        (flat_record(followers_count=True), "bad_followers_count"),
        (flat_record(followers_count=-1), "bad_followers_count"),
        (flat_record(followers_count=2**31), "bad_followers_count"),
        (flat_record(followers_count=2**63 - 1), "bad_followers_count"),
        (flat_record(like_count=2.0), "bad_like_count"),
        (flat_record(like_count=2**31), "bad_like_count"),
        (flat_record(like_count=2**63 - 1), "bad_like_count"),
        (flat_record(like_count=2**63), "bad_like_count"),
        (flat_record(retweet_count="0"), "bad_retweet_count"),
        (flat_record(retweet_count=2**31), "bad_retweet_count"),
        (flat_record(retweet_count=2**63 - 1), "bad_retweet_count"),
        (flat_record(retweet_count=None), "bad_retweet_count"),
    ],
)
def test_parse_flat_rejections(raw: bytes | None, expected: str) -> None:
    assert reason(parse_flat(raw)) == expected


def test_parse_flat_accepts_boundaries_and_ignores_other_keys() -> None:
    raw = flat_record(
        tweet_id=str(2**63 - 1),
        created_at="not checked here",
        location="",
        followers_count=2**31 - 1,
        like_count=2**31 - 1,
        retweet_count=2**31 - 1,
        extra={"nested": [1, 2]},
        author_id=MISSING,
        hashtags="not a list",
        lang=5,
        text=MISSING,
    )
    flat = valid(parse_flat(raw))
    assert flat.tweet_id == str(2**63 - 1)
    assert (flat.created_at, flat.location) == ("not checked here", "")
    assert (flat.followers_count, flat.like_count, flat.retweet_count) == (
        2**31 - 1,
        2**31 - 1,
        2**31 - 1,
    )
    assert (flat.author_id, flat.hashtags, flat.lang, flat.text) == ("", (), None, "")


def test_parse_flat_keeps_only_string_hashtags() -> None:
    assert valid(parse_flat(flat_record(hashtags=["a", 1, None, "b"]))).hashtags == ("a", "b")


def test_from_json_bytes_raises_invalid_record() -> None:
    with pytest.raises(InvalidRecord) as caught:
        FlatTweet.from_json_bytes(flat_record(like_count=False))
    assert isinstance(caught.value, ValueError)
    assert caught.value.reason == "bad_like_count"
    assert "like_count" in caught.value.detail


def test_rejection_details_stay_short_for_huge_values() -> None:
    rejected = parse(**{"data.id": "x" * 1_000_000})
    assert isinstance(rejected, Rejected)
    assert len(rejected.detail) < 300


def test_max_count_keeps_every_sum_of_2_pow_32_counts_inside_a_signed_64_bit_column() -> None:
    assert contract.MAX_COUNT * 2**32 < 2**63  # every sum of 2**32 counts fits a signed BIGINT


# --- the Kafka record: ingest time, then value -----------------------------------------------

# Written out by hand (``date -u -d 2006-03-21T00:00:00Z +%s`` is 1142899200; the epoch second
# of 10000-01-01T00:00:00Z is 253402300800), not taken from the module under test.
FIRST_MS = 1_142_899_200_000  # 2006-03-21T00:00:00.000Z
LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
YEAR_10000_MS = 253_402_300_800_000  # 10000-01-01T00:00:00.000Z
MS_1990 = 631_152_000_000  # 1990-01-01T00:00:00.000Z


@pytest.mark.parametrize(
    ("ms", "expected"),
    [
        (FIRST_MS, datetime(2006, 3, 21, tzinfo=UTC)),
        (LAST_MS, datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
        (1_793_564_100_123, datetime(2026, 11, 1, 20, 15, 0, 123000, tzinfo=UTC)),
    ],
)
def test_ingest_time_of_a_timestamp_a_tweet_can_have(ms: int, expected: datetime) -> None:
    moment = ingest_time(ms)
    assert moment == expected
    assert moment is not None and moment.tzinfo is UTC


@pytest.mark.parametrize(
    "ms",
    [FIRST_MS - 1, LAST_MS + 1, YEAR_10000_MS, MS_1990, 0, -1, -(2**63), 2**63 - 1],
)
def test_ingest_time_is_none_outside_the_range(ms: int) -> None:
    assert ingest_time(ms) is None


@pytest.mark.parametrize("ms", [FIRST_MS, FIRST_MS + 1, 1_793_564_100_000, LAST_MS - 1, LAST_MS])
def test_parse_record_accepts_a_valid_value_at_any_ingest_time_in_range(ms: int) -> None:
    assert parse_record(FLAT.to_json_bytes(), ms) == FLAT


@pytest.mark.parametrize(
    "ms",
    [FIRST_MS - 1, LAST_MS + 1, YEAR_10000_MS, MS_1990, 0, -1, -(2**63), 2**63 - 1],
)
def test_parse_record_refuses_a_valid_value_outside_the_ingest_range(ms: int) -> None:
    assert reason(parse_record(FLAT.to_json_bytes(), ms)) == "bad_ingest_time"


@pytest.mark.parametrize("value", [None, b"", b"\xff", b"[]", flat_record(v=2), b"not json"])
@pytest.mark.parametrize("ms", [FIRST_MS - 1, LAST_MS + 1, YEAR_10000_MS, -1])
def test_parse_record_checks_the_ingest_time_before_the_value(value: bytes | None, ms: int) -> None:
    assert reason(parse_record(value, ms)) == "bad_ingest_time"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "null_value"),
        (b"\xff", "not_utf8"),
        (b"not json", "not_json"),
        (b"[]", "not_object"),
        (flat_record(v=2), "bad_version"),
        (flat_record(like_count=2**31), "bad_like_count"),
    ],
)
@pytest.mark.parametrize("ms", [FIRST_MS, LAST_MS])
def test_parse_record_in_range_gives_the_value_s_own_reason(
    value: bytes | None, expected: str, ms: int
) -> None:
    assert reason(parse_record(value, ms)) == expected


@given(
    st.binary(max_size=200) | st.none() | st.just(FLAT.to_json_bytes()),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
def test_parse_record_never_raises_and_judges_the_time_first(value: bytes | None, ms: int) -> None:
    result = parse_record(value, ms)
    assert isinstance(result, FlatTweet | Rejected)
    if not FIRST_MS <= ms <= LAST_MS:
        assert isinstance(result, Rejected) and result.reason == "bad_ingest_time"
    else:
        assert result == parse_flat(value)


# --- never raises ----------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)
TEMPLATE_PATHS = [
    "data",
    "data.id",
    "data.text",
    "data.author_id",
    "data.created_at",
    "data.lang",
    "data.public_metrics",
    "data.public_metrics.like_count",
    "data.public_metrics.retweet_count",
    "data.entities",
    "data.entities.hashtags",
    "data.edit_history_tweet_ids",
    "data.referenced_tweets",
    "data.edit_controls",
    "data.conversation_id",
    "includes",
    "includes.users",
    "includes.users.0",
    "includes.users.0.id",
    "includes.users.0.name",
    "includes.users.0.location",
    "includes.users.0.public_metrics",
    "includes.users.0.public_metrics.followers_count",
]


@given(st.binary(max_size=300))
def test_parse_api_tweet_never_raises_on_bytes(raw: bytes) -> None:
    assert isinstance(parse_api_tweet(raw), FlatTweet | Rejected | None)
    moment = due_time(raw)
    assert moment is None or moment.tzinfo is UTC


@given(st.text(max_size=300))
def test_parse_api_tweet_never_raises_on_text(raw: str) -> None:
    assert isinstance(parse_api_tweet(raw), FlatTweet | Rejected | None)
    due_time(raw)


@given(st.dictionaries(st.sampled_from(TEMPLATE_PATHS), JSON_VALUES, max_size=4))
def test_parse_api_tweet_never_raises_on_mutated_tweets(mutations: dict[str, Any]) -> None:
    message = api_tweet()
    for path in sorted(mutations, key=len):  # parents first, so children may land inside them
        with contextlib.suppress(KeyError, TypeError, IndexError, ValueError):
            message = api_tweet_with(message, path, copy.deepcopy(mutations[path]))
    result = parse_api_tweet(encode(message))
    assert isinstance(result, FlatTweet | Rejected)
    if isinstance(result, FlatTweet):
        assert parse_flat(result.to_json_bytes()) == result


def api_tweet_with(message: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """``message`` with ``value`` at ``path``; raises when a parent is no longer a container."""
    *parents, leaf = path.split(".")
    node: Any = message
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(leaf)] = value
    else:
        node[leaf] = value
    return message


@given(st.binary(max_size=300) | st.none())
def test_parse_flat_never_raises(raw: bytes | None) -> None:
    assert isinstance(parse_flat(raw), FlatTweet | Rejected)


@given(st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=12))
def test_parse_flat_never_raises_on_objects(record: dict[str, Any]) -> None:
    base = json.loads(FLAT.to_json_bytes())
    assert isinstance(parse_flat(json.dumps(base | record).encode()), FlatTweet | Rejected)


# --- due_time --------------------------------------------------------------------------------

CREATED = datetime(2026, 11, 1, 20, 15, tzinfo=UTC)


def test_due_time_of_a_valid_tweet() -> None:
    moment = due_time(encode(api_tweet()))
    assert moment == CREATED
    assert moment is not None and moment.tzinfo is UTC


@pytest.mark.parametrize(
    "created_at", ["2026-11-01T20:15:00Z", "2026-11-01T20:15:00.1Z", "2026-11-01T20:15:00.987654Z"]
)
def test_due_time_from_the_parsed_tweet_agrees_with_the_raw_line(created_at: str) -> None:
    """Replay passes the parsed tweet to skip a second JSON parse; the clock (in ms) must
    see the same moment either way."""
    raw = encode(api_tweet(**{"data.created_at": created_at}))
    parsed = parse_api_tweet(raw)
    assert isinstance(parsed, FlatTweet)
    from_raw, from_parsed = due_time(raw), due_time(raw, parsed)
    assert from_raw is not None and from_parsed is not None
    assert from_parsed == from_raw.replace(microsecond=from_raw.microsecond // 1000 * 1000)


@pytest.mark.parametrize(
    "raw",
    [
        encode(api_tweet(**{"data.public_metrics.like_count": 1.5})),
        encode(api_tweet(**{"data.id": "x"})),
        encode(api_tweet())[: encode(api_tweet()).index(b'"lang"')],  # truncated mid-line
        json.dumps(api_tweet(**{"data.created_at": "2026-11-01T22:15:00+02:00"})),
        b'{"data":{"created_at":"2026-11-01T20:15:00Z"}}',
        b'\xff{"data":{"created_at":"2026-11-01T20:15:00.000Z"',
    ],
)
def test_due_time_reads_invalid_records_too(raw: bytes | str) -> None:
    assert due_time(raw) == CREATED


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff",
        b"[]",
        b"[" * 100_000,
        encode(api_tweet(**{"data.created_at": MISSING})),
        encode(api_tweet(**{"data.created_at": "yesterday"})),
        encode(api_tweet(**{"data.created_at": "2026-11-01T20:15:00"})),  # no zone
        encode(api_tweet(**{"data.created_at": 1793564100})),
        b'{"data":{"id":"1","crea',
    ],
)
def test_due_time_is_none_when_unreadable(raw: bytes) -> None:
    assert due_time(raw) is None
