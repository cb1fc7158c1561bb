"""`live` keeps the account's stream rules of other programs (issue 15, item 5)."""

from __future__ import annotations

import tweepy

from lambda_demo.ingestion.live import RULE_TAG, rule_changes


def _rule(value: str, rule_id: str, tag: str | None) -> tweepy.StreamRule:
    return tweepy.StreamRule(value=value, tag=tag, id=rule_id)


def test_only_rules_tagged_by_lambda_demo_are_deleted() -> None:
    existing = [
        _rule("cats", "1", "another-app"),
        _rule("dogs", "2", None),
        _rule("old topic", "3", RULE_TAG),
        _rule("#python", "4", RULE_TAG),
    ]
    stale, missing = rule_changes(existing, ["#python", "lang:en kafka"])
    assert stale == ["3"]
    assert missing == ["lang:en kafka"]


def test_a_foreign_rule_with_our_value_does_not_count_as_ours() -> None:
    stale, missing = rule_changes([_rule("#python", "9", "another-app")], ["#python"])
    assert stale == []
    assert missing == ["#python"]


def test_rules_already_in_place_are_left_as_they_are() -> None:
    stale, missing = rule_changes([_rule("#python", "4", RULE_TAG)], ["#python"])
    assert (stale, missing) == ([], [])
