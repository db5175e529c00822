"""P2PNode on loopback: real libp2p hosts (two or three per test, each in its own
p2p thread), real Noise + Yamux, real GossipSub."""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

import multiaddr
import pytest
import trio
from fedswarm.p2p import framing
from fedswarm.p2p.envelope import seal
from fedswarm.p2p.errors import (
    BlobError,
    BlobRejectedError,
    BlobTimeoutError,
    BlobTooLargeError,
    NotAMemberError,
)
from fedswarm.p2p.host import build_host
from fedswarm.p2p.identity import Identity
from fedswarm.p2p.node import NodeConfig
from fedswarm.p2p.trio_bridge import TrioThread
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

from .conftest import connected_pair, make_roster, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def test_20mb_blob_arrives_intact_with_signed_header(node_factory: Any) -> None:
    a, _, b, inbox_b = await connected_pair(node_factory)
    payload = os.urandom(20 * 2**20)
    await a.send_blob(b.peer_id, "update", 4, payload)
    assert len(inbox_b.blobs) == 1
    header, data = inbox_b.blobs[0]
    assert hashlib.sha256(data).digest() == hashlib.sha256(payload).digest()
    assert (header.sender, header.recipient, header.kind, header.round) == (
        a.peer_id,
        b.peer_id,
        "update",
        4,
    )
    assert a.stats()["blobs_sent"] == 1 and b.stats()["bytes_received"] == len(payload)


async def test_oversized_blob_is_refused_from_header_before_body(node_factory: Any) -> None:
    ids = [Identity.generate(), Identity.generate()]
    roster = make_roster(ids)
    # pipeline_max_blob_bytes=0: every blob waits for the accept before its body.
    a, _ = await node_factory(ids[0], roster, NodeConfig(pipeline_max_blob_bytes=0))
    b, inbox_b = await node_factory(ids[1], roster, NodeConfig(max_blob_bytes=1000))
    await a.dial(b.listen_addrs[0])
    with pytest.raises(BlobTooLargeError, match="too_large"):
        await a.send_blob(b.peer_id, "update", 1, b"x" * 5000)
    assert inbox_b.blobs == []
    assert a.stats()["bytes_sent"] == 0  # not one body byte was sent
    assert b.stats()["bytes_received"] == 0
    assert b.stats()["rejected"]["too_large"] == 1


async def test_refused_pipelined_blob_fails_with_the_refusal_not_a_window_timeout(
    node_factory: Any,
) -> None:
    # A 4 MiB blob is pipelined: its first Yamux window of body goes out with the
    # header. The receiver never reads it, yet the sender must get the refusal
    # (not block on the window until Yamux's 5 s write timeout), and the
    # connection must keep working.
    ids = [Identity.generate(), Identity.generate()]
    roster = make_roster(ids)
    a, _ = await node_factory(ids[0], roster)
    b, inbox_b = await node_factory(ids[1], roster, NodeConfig(max_blob_bytes=2**20))
    await a.dial(b.listen_addrs[0])
    payload = os.urandom(4 * 2**20)
    assert len(payload) <= a.config.pipeline_max_blob_bytes
    for round_ in (1, 2):
        with pytest.raises(BlobTooLargeError, match="too_large"):
            await a.send_blob(b.peer_id, "update", round_, payload, timeout=30)
    sent = a.stats()["bytes_sent"]
    assert 0 < sent <= 2 * 256 * 1024  # at most one initial window per refused stream
    assert b.stats()["bytes_received"] == 0 and b.stats()["rejected"]["too_large"] == 2
    await a.send_blob(b.peer_id, "update", 3, b"small one")
    assert [d for _, d in inbox_b.blobs] == [b"small one"]


async def test_handler_exception_rejects_blob_and_node_survives(node_factory: Any) -> None:
    a, _, b, inbox_b = await connected_pair(node_factory)
    inbox_b.fail_blobs = True
    with pytest.raises(BlobRejectedError, match="handler_error"):
        await a.send_blob(b.peer_id, "update", 1, b"boom")
    inbox_b.fail_blobs = False
    await a.send_blob(b.peer_id, "update", 2, b"fine")
    assert [h.round for h, _ in inbox_b.blobs] == [2]


async def test_dialing_a_non_member_is_refused_before_connecting(node_factory: Any) -> None:
    a, _, _, _ = await connected_pair(node_factory)
    outsider = Identity.generate()
    with pytest.raises(NotAMemberError):
        await a.dial(f"/ip4/127.0.0.1/tcp/1/p2p/{outsider.peer_id}")
    with pytest.raises(NotAMemberError):
        await a.send_blob(outsider.peer_id, "update", 1, b"x")


async def test_inbound_non_member_is_disconnected_after_handshake(node_factory: Any) -> None:
    member, outsider = Identity.generate(), Identity.generate()
    a, _ = await node_factory(member, make_roster([member]))
    # The outsider believes it is in a federation with ``a``.
    c, _ = await node_factory(outsider, make_roster([member, outsider]))
    await c.dial(a.listen_addrs[0])  # Noise handshake succeeds, then ``a`` hangs up
    assert await wait_until(lambda: a.stats()["rejected"].get("not_member", 0) >= 1)
    assert await wait_until(lambda: a.peer_id not in c.connected_peers())
    assert outsider.peer_id not in a.connected_peers()


def _plaintext_dial(target: str) -> str:
    """Dial ``target`` with a host that offers only the plaintext 'security'."""
    outcome: list[str] = []

    async def main() -> None:
        kp = create_new_key_pair()
        host = new_host(
            key_pair=kp,
            sec_opt={TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(kp)},
        )
        async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            m = multiaddr.Multiaddr(target)
            pid = ID.from_base58(m.value_for_protocol("p2p"))
            addr = m.decapsulate(multiaddr.Multiaddr(f"/p2p/{pid}"))
            try:
                with trio.fail_after(15):
                    await host.connect(PeerInfo(pid, [addr]))
                outcome.append("connected")
            except Exception as exc:
                outcome.append(f"refused: {type(exc).__name__}")

    trio.run(main)
    return outcome[0]


async def test_plaintext_dialer_is_refused(node_factory: Any) -> None:
    ident = Identity.generate()
    a, _ = await node_factory(ident, make_roster([ident]))
    outcome = await asyncio.to_thread(_plaintext_dial, a.listen_addrs[0])
    assert outcome.startswith("refused"), outcome
    assert a.connected_peers() == set()


async def test_gossip_is_delivered_and_forgeries_are_dropped(node_factory: Any) -> None:
    ids = [Identity.generate() for _ in range(3)]
    roster = make_roster(ids)
    a, inbox_a = await node_factory(ids[0], roster)
    b, _ = await node_factory(ids[1], roster, NodeConfig(bootstrap=(a.listen_addrs[0],)))
    c, inbox_c = await node_factory(ids[2], roster, NodeConfig(bootstrap=(a.listen_addrs[0],)))
    for node in (a, b, c):
        await node.subscribe("news")
    # b and c only know a; they must find each other through address announcements.
    assert await wait_until(lambda: len(b.connected_peers()) == 2 and len(c.connected_peers()) == 2)
    await asyncio.sleep(1.5)  # let the GossipSub mesh form (heartbeat is 1 s)
    await b.publish("news", b"round 5 starts")
    assert await wait_until(lambda: len(inbox_a.gossip) == 1 and len(inbox_c.gossip) == 1)
    assert inbox_a.gossip[0] == ("news", b.peer_id, b"round 5 starts")

    # Forgeries: signed for another topic, and signed for another federation.
    wrong_topic = seal(ids[1], roster.federation_id, "other", b"forged")
    wrong_fed = seal(ids[1], "other-fed", "news", b"forged")
    for raw in (wrong_topic, wrong_fed):
        await b._call(b._publish_trio, "news", raw)
    await b.publish("news", b"after forgeries")
    assert await wait_until(lambda: len(inbox_a.gossip) == 2)
    assert [p for _, _, p in inbox_a.gossip] == [b"round 5 starts", b"after forgeries"]


async def test_removed_member_is_disconnected_live(node_factory: Any) -> None:
    a, _, b, _ = await connected_pair(node_factory)
    a.set_roster(a.roster.without_member(b.peer_id))
    assert await wait_until(lambda: a.peer_id not in b.connected_peers())
    with pytest.raises(NotAMemberError):
        await a.send_blob(b.peer_id, "update", 1, b"x")
    # b still believes a is a member, but a refuses its reconnections.
    with pytest.raises(BlobError):
        await b.send_blob(a.peer_id, "update", 1, b"x", timeout=10)


class _StalledReceiver:
    """A roster member whose blob handler accepts the header, then never reads."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.thread = TrioThread(name="stalled-receiver")
        self.addrs: list[str] = []

    async def _handler(self, stream: Any) -> None:
        read = stream.read
        await framing.read_signed_header(read)
        await stream.write(framing.encode_reply(framing.STATUS_OK))
        await trio.sleep(30)

    async def _serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        host = build_host(self.identity, ["/ip4/127.0.0.1/tcp/0"])
        async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            host.set_stream_handler(TProtocol(framing.BLOB_PROTOCOL), self._handler)
            self.addrs = [str(a) for a in host.get_addrs()]
            task_status.started()
            await trio.sleep_forever()

    def start(self) -> None:
        async def main(nursery: trio.Nursery) -> None:
            await nursery.start(self._serve)

        self.thread.start(main)


async def test_receiver_that_stops_reading_fails_send_in_bounded_time(node_factory: Any) -> None:
    ids = [Identity.generate() for _ in range(3)]
    roster = make_roster(ids)
    a, _ = await node_factory(ids[0], roster)
    healthy, inbox = await node_factory(ids[2], roster)
    stalled = _StalledReceiver(ids[1])
    await asyncio.to_thread(stalled.start)
    try:
        await a.dial(stalled.addrs[0])
        await a.dial(healthy.listen_addrs[0])
        with pytest.raises((BlobTimeoutError, BlobRejectedError)) as err:
            await a.send_blob(ids[1].peer_id, "update", 1, os.urandom(8 * 2**20), timeout=8)
        print("stalled receiver made send_blob raise:", repr(err.value))
        # The sender's node is still healthy afterwards.
        await a.send_blob(healthy.peer_id, "update", 2, b"still works")
        assert [d for _, d in inbox.blobs] == [b"still works"]
    finally:
        await asyncio.to_thread(stalled.thread.stop, 5.0)


async def test_a_connection_that_ends_unreported_is_forgotten(node_factory: Any) -> None:
    """libp2p reports a closed connection at the end of a clean-up that can be cancelled
    part-way; a lost report must not leave a member looking connected forever (it would
    never be re-dialled). The lost report is played by counting one connection twice."""
    a, _, b, _ = await connected_pair(node_factory)
    b._connections.on_connected(a.peer_id)  # the report of one closed connection never comes
    await a.stop()
    assert await wait_until(lambda: a.peer_id not in b.connected_peers(), timeout=20)


async def test_a_connection_closed_without_its_clean_up_is_dialled_again(node_factory: Any) -> None:
    """``SwarmConn.close`` marks a connection closed and only removes it from the swarm's
    table at the end of its clean-up; cut short, the closed entry stays, and
    ``host.connect`` used to return at once on seeing it: the member looked dialled and
    was never reached again. The cut-short clean-up is played by marking the connection
    closed and leaving it in the table."""
    a, _, b, _ = await connected_pair(node_factory)
    a_id = ID.from_base58(a.peer_id)

    async def leave_a_closed_entry() -> None:
        network = b._runtime._ctx.handles.require_host().get_network()
        network.get_connections(a_id)[0].event_closed.set()

    async def open_connections_to_a() -> int:
        network = b._runtime._ctx.handles.require_host().get_network()
        return sum(not conn.is_closed for conn in network.get_connections(a_id))

    await b._call(leave_a_closed_entry)
    assert await b._call(open_connections_to_a) == 0
    await b.dial(a.listen_addrs[0])
    assert await b._call(open_connections_to_a) == 1
    await b.send_blob(a.peer_id, "update", 1, b"reached")


async def test_a_pubsub_frame_that_is_not_an_rpc_costs_its_stream_not_the_node(
    node_factory: Any,
) -> None:
    """py-libp2p's pubsub handler let protobuf's DecodeError escape: one such frame from
    a connected peer ended the receiver's whole p2p thread (the daemon ran on, deaf)."""
    a, _, b, inbox_b = await connected_pair(node_factory)
    frame = b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"  # field 1, a length that never ends

    async def send_garbage() -> None:
        host = a._runtime._ctx.handles.require_host()
        stream = await host.new_stream(ID.from_base58(b.peer_id), [PROTOCOL_ID_V11])
        await stream.write(bytes([len(frame)]) + frame)
        await trio.sleep(0.5)

    await a._call(send_garbage)
    assert await wait_until(lambda: b.stats()["rejected"].get("gossip_malformed", 0) == 1)
    assert b._bridge.running
    await a.send_blob(b.peer_id, "update", 1, b"still here")
    assert [d for _, d in inbox_b.blobs] == [b"still here"]


async def test_a_p2p_thread_that_ends_by_itself_is_reported(node_factory: Any) -> None:
    """The daemon exits (and systemd restarts it) when this says so, instead of running
    on without a network; a stop it asked for is not "unexpected"."""
    _, _, b, _ = await connected_pair(node_factory)
    assert not b.ended_unexpectedly()

    async def let_an_error_escape() -> None:
        async def escape() -> None:
            raise RuntimeError("an error libp2p did not catch")

        b._handles.require_nursery().start_soon(escape)

    await b._call(let_an_error_escape)
    assert await wait_until(b.ended_unexpectedly, timeout=10)
    await b.stop()
    assert not b.ended_unexpectedly()
