"""Small messages on one long-lived stream per member: ordered, signed, checked like
blob headers, and a bad message ends only its own stream, never the node."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import pytest
from fedswarm.p2p import framing
from fedswarm.p2p.errors import BlobTooLargeError, NotAMemberError
from fedswarm.p2p.framing import BlobHeader
from fedswarm.p2p.identity import Identity
from fedswarm.p2p.message_streams import MESSAGE_PROTOCOL
from fedswarm.p2p.node import NodeConfig, P2PNode
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from .conftest import connected_pair, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _frame(sender: P2PNode, recipient: str, body: bytes, **changes: Any) -> bytes:
    """A signed message frame as ``sender`` would write it, with header fields changed."""
    fields: dict[str, Any] = {
        "federation_id": sender.roster.federation_id,
        "sender": sender.peer_id,
        "recipient": recipient,
        "kind": "test",
        "round": 1,
        "length": len(body),
        "sha256": hashlib.sha256(body).digest(),
        "sent_at": time.time(),
    }
    fields.update(changes)
    return framing.encode_signed_header(BlobHeader(**fields), sender.identity)


def _flip_signature_bit(frame: bytes) -> bytes:
    """``frame`` with one bit of its Ed25519 signature's R half flipped.

    Not the last byte set to zero: that byte is the top of S, which is below 0x10,
    so it is already zero for about one signature in sixteen and the frame stays valid.
    """
    forged = bytearray(frame)
    forged[len(frame) - 64] ^= 1  # the signature is the frame's last 64 bytes
    return bytes(forged)


async def _write_raw(node: P2PNode, peer: str, data: bytes) -> None:
    """Open a message stream from ``node`` to ``peer`` by hand, write ``data``, close."""

    async def write() -> None:
        assert node._host is not None
        stream = await node._host.new_stream(ID.from_base58(peer), [TProtocol(MESSAGE_PROTOCOL)])
        await stream.write(data)
        await stream.close()

    await node._call(write)


async def test_messages_arrive_in_order_on_one_stream(node_factory: Any) -> None:
    a, _, b, inbox_b = await connected_pair(node_factory)
    payloads = [os.urandom(100 + i) for i in range(30)]
    for i, payload in enumerate(payloads):
        await a.send_message(b.peer_id, "keys", i, payload)
    assert await wait_until(lambda: len(inbox_b.blobs) == 30)
    assert [data for _, data in inbox_b.blobs] == payloads
    header = inbox_b.blobs[7][0]
    assert (header.sender, header.recipient, header.kind, header.round) == (
        a.peer_id, b.peer_id, "keys", 7,
    )  # fmt: skip
    assert a.stats()["message_streams_opened"] == 1
    assert a.stats()["messages_sent"] == 30
    assert b.stats()["messages_received"] == 30
    assert b.stats()["blobs_received"] == 0


async def test_too_large_or_non_member_is_refused_before_sending(node_factory: Any) -> None:
    config = NodeConfig(max_message_bytes=1000)
    a, _, b, inbox_b = await connected_pair(node_factory, config)
    with pytest.raises(BlobTooLargeError, match="use send_blob"):
        await a.send_message(b.peer_id, "keys", 1, b"x" * 1001)
    with pytest.raises(NotAMemberError):
        await a.send_message(Identity.generate().peer_id, "keys", 1, b"x")
    assert a.stats()["message_streams_opened"] == 0
    assert inbox_b.blobs == []


async def test_a_failing_handler_does_not_end_the_stream(node_factory: Any) -> None:
    a, _, b, inbox_b = await connected_pair(node_factory)
    inbox_b.fail_blobs = True
    await a.send_message(b.peer_id, "keys", 1, b"first")
    await a.send_message(b.peer_id, "keys", 2, b"second")
    # the count of messages received moves before the handler runs: wait for the handler
    assert await wait_until(lambda: inbox_b.failed == 2)
    assert b.stats()["messages_received"] == 2
    inbox_b.fail_blobs = False
    await a.send_message(b.peer_id, "keys", 3, b"third")
    assert await wait_until(lambda: len(inbox_b.blobs) == 1)
    assert inbox_b.blobs[0][1] == b"third"
    assert a.stats()["message_streams_opened"] == 1


@pytest.mark.parametrize(
    ("make_bad", "reason"),
    [
        (lambda s, r: _flip_signature_bit(_frame(s, r, b"hello")) + b"hello", "bad_signature"),
        (lambda s, r: _frame(s, r, b"hello", sha256=b"\x01" * 32) + b"hello", "corrupt"),
        (lambda s, r: _frame(s, r, b"hello" * 20) + b"hello", "truncated"),
        (lambda s, r: _frame(s, r, b"x" * 2000) + b"x" * 2000, "too_large"),
        (lambda s, r: _frame(s, "12D3KooWsomeoneelse", b"hello") + b"hello", "wrong_recipient"),
        (lambda s, r: _frame(s, r, b"hello", federation_id="other") + b"hello", "wrong_federation"),
        (lambda s, r: b"GARBAGE!" + os.urandom(64), "bad_signature"),
    ],
    ids=["forged", "corrupt", "truncated", "oversized", "recipient", "federation", "garbage"],
)
async def test_bad_message_is_refused_and_the_node_keeps_working(
    node_factory: Any, make_bad: Any, reason: str
) -> None:
    a, _, b, inbox_b = await connected_pair(node_factory, NodeConfig(max_message_bytes=1024))
    await _write_raw(a, b.peer_id, make_bad(a, b.peer_id))
    assert await wait_until(lambda: b.stats()["rejected"].get(reason) == 1), b.stats()["rejected"]
    assert inbox_b.blobs == []
    await a.send_message(b.peer_id, "keys", 1, b"still works")
    assert await wait_until(lambda: len(inbox_b.blobs) == 1)
    assert inbox_b.blobs[0][1] == b"still works"


async def test_messages_after_a_good_one_on_a_refused_stream_are_not_delivered(
    node_factory: Any,
) -> None:
    a, _, b, inbox_b = await connected_pair(node_factory)
    good = _frame(a, b.peer_id, b"one") + b"one"
    forged = _frame(a, b.peer_id, b"two", sha256=b"\x02" * 32) + b"two"
    after = _frame(a, b.peer_id, b"three") + b"three"
    await _write_raw(a, b.peer_id, good + forged + after)
    assert await wait_until(lambda: b.stats()["rejected"].get("corrupt") == 1)
    assert [data for _, data in inbox_b.blobs] == [b"one"]


async def test_a_dropped_connection_gets_a_fresh_stream(node_factory: Any) -> None:
    a, _, b, inbox_b = await connected_pair(node_factory)
    await a.send_message(b.peer_id, "keys", 1, b"before")
    assert await wait_until(lambda: len(inbox_b.blobs) == 1)
    await b._call(b._close_peer, a.peer_id)
    assert await wait_until(lambda: a.peer_id not in b.connected_peers())
    await a.send_message(b.peer_id, "keys", 2, b"after")
    assert await wait_until(lambda: len(inbox_b.blobs) == 2)
    assert inbox_b.blobs[1][1] == b"after"
    assert a.stats()["message_streams_opened"] == 2
