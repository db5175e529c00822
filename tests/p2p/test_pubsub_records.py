"""A peer's signed peer record is verified once, not on each of its pubsub RPCs; a
record with other bytes (new addresses, a forgery) is always verified. Our own record
is built once per RESEND_CHECK_S, not for every RPC we send."""

from __future__ import annotations

from typing import Any

import pytest
from fedswarm.p2p import pubsub_records
from libp2p.pubsub.pb import rpc_pb2


class _Host:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_id(self) -> str:
        return self.name


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every record py-libp2p's own check saw; it accepts records starting with b"ok"."""
    seen: list[bytes] = []

    def original(msg: Any, host: Any, peer_id: Any) -> bool:
        seen.append(bytes(msg.senderRecord))
        return bytes(msg.senderRecord).startswith(b"ok")

    monkeypatch.setattr(pubsub_records, "_ORIGINAL", original)
    monkeypatch.setattr(pubsub_records, "_verified", type(pubsub_records._verified)())
    return seen


def _rpc(record: bytes | None) -> Any:
    rpc = rpc_pb2.RPC()
    if record is not None:
        rpc.senderRecord = record
    return rpc


def test_the_same_record_from_the_same_peer_is_verified_once(checks: list[bytes]) -> None:
    host = _Host("me")
    for _ in range(5):
        assert pubsub_records.consume_once(_rpc(b"ok-1"), host, "peer-a")
    assert checks == [b"ok-1"]


def test_new_bytes_and_other_peers_are_verified(checks: list[bytes]) -> None:
    host = _Host("me")
    assert pubsub_records.consume_once(_rpc(b"ok-1"), host, "peer-a")
    assert pubsub_records.consume_once(_rpc(b"ok-2"), host, "peer-a")  # new addresses
    assert pubsub_records.consume_once(_rpc(b"ok-1"), host, "peer-b")  # another sender
    assert pubsub_records.consume_once(_rpc(b"ok-1"), _Host("other"), "peer-a")  # another node
    assert checks == [b"ok-1", b"ok-2", b"ok-1", b"ok-1"]


def test_a_refused_record_is_never_remembered(checks: list[bytes]) -> None:
    host = _Host("me")
    assert not pubsub_records.consume_once(_rpc(b"forged"), host, "peer-a")
    assert not pubsub_records.consume_once(_rpc(b"forged"), host, "peer-a")
    assert checks == [b"forged", b"forged"]


def test_a_remembered_record_is_verified_again_after_the_recheck_time(
    checks: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    host, now = _Host("me"), [1000.0]
    monkeypatch.setattr(pubsub_records.time, "monotonic", lambda: now[0])
    assert pubsub_records.consume_once(_rpc(b"ok-1"), host, "peer-a")
    now[0] += pubsub_records.RECHECK_S + 1
    assert pubsub_records.consume_once(_rpc(b"ok-1"), host, "peer-a")
    assert checks == [b"ok-1", b"ok-1"]


def test_an_rpc_without_a_record_passes_unchecked(checks: list[bytes]) -> None:
    assert pubsub_records.consume_once(_rpc(None), _Host("me"), "peer-a")
    assert checks == []


def test_installed_nodes_use_the_cache() -> None:
    import libp2p.pubsub.gossipsub as gossipsub
    import libp2p.pubsub.pubsub as pubsub

    pubsub_records.install()
    assert pubsub.maybe_consume_signed_record is pubsub_records.consume_once
    assert gossipsub.maybe_consume_signed_record is pubsub_records.consume_once
    assert pubsub.env_to_send_in_RPC is pubsub_records.envelope_once
    assert gossipsub.env_to_send_in_RPC is pubsub_records.envelope_once


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every time py-libp2p's own env_to_send_in_RPC ran, for which host."""
    seen: list[str] = []

    def original(host: Any) -> tuple[bytes, bool]:
        seen.append(host.get_id())
        return f"record-of-{host.get_id()}-{len(seen)}".encode(), True

    monkeypatch.setattr(pubsub_records, "_ORIGINAL_ENVELOPE", original)
    monkeypatch.setattr(pubsub_records, "_ours", {})
    return seen


def test_our_record_is_built_once_per_host_not_for_every_rpc_sent(
    builds: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(pubsub_records.time, "monotonic", lambda: now[0])
    me, other = _Host("me"), _Host("other")
    sent = [pubsub_records.envelope_once(me)[0] for _ in range(50)]
    assert set(sent) == {b"record-of-me-1"} and builds == ["me"]
    assert pubsub_records.envelope_once(other)[0] == b"record-of-other-2"  # per host
    # after RESEND_CHECK_S py-libp2p is asked again: a changed address gets out
    now[0] += pubsub_records.RESEND_CHECK_S
    assert pubsub_records.envelope_once(me)[0] == b"record-of-me-3"
    assert builds == ["me", "other", "me"]
