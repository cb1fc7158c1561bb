"""The embedded services' pure helpers."""

from __future__ import annotations

import base64
import uuid

import pytest

from lambda_demo.stack import services


def test_kafka_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0xF8 as the first byte encodes to "-" in URL-safe base64: the storage tool would read
    # such an id as an option. The first draw is one of those; the id must be the second.
    dash_first = uuid.UUID(bytes=b"\xf8" + bytes(15))
    plain = uuid.UUID(bytes=b"\x01" + bytes(15))
    assert base64.urlsafe_b64encode(dash_first.bytes).startswith(b"-")
    draws = iter([dash_first, plain])
    monkeypatch.setattr(services.uuid, "uuid4", lambda: next(draws))

    cluster_id = services.kafka_cluster_id()

    assert cluster_id == base64.urlsafe_b64encode(plain.bytes).decode().rstrip("=")


def test_kafka_cluster_ids_are_22_character_uuids() -> None:
    ids = {services.kafka_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    for cluster_id in ids:
        assert len(cluster_id) == 22 and not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
