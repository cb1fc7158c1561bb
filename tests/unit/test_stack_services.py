"""The embedded services' pure helpers."""

from __future__ import annotations

import base64
import socket
import uuid

import pytest

from lambda_demo.stack import process, services


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


def test_service_ports_are_free_and_outside_the_kernels_source_ports() -> None:
    # A port in the ephemeral range can be taken by a client's outgoing connection while its
    # service is down (seen in CI: a producer reconnecting to a killed broker held its port).
    ephemeral = process.ephemeral_ports()
    ports = {process.free_port() for _ in range(50)}
    for port in ports:
        assert port not in ephemeral
        assert not process.port_open(port)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # nothing holds it


def test_no_free_service_port_is_an_error_in_words(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process, "ephemeral_ports", lambda: range(0, 65536))
    with pytest.raises(OSError, match="no free TCP port"):
        process.free_port()
