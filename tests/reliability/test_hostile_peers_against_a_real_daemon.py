"""A real ``fedswarm run`` daemon under attack from in-process libp2p peers on loopback.

The attackers are real ``P2PNode`` hosts: one holds a roster identity (a malicious
*member*), one does not. They dial, replay, forge, truncate, oversize and flood; the
daemon must refuse each, say so (its ``/api/traffic`` rejection counters and its
``/api/security`` rejected list), keep answering its API and keep finishing rounds.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from fedswarm.daemon.demo.local_federation import LocalFederation, PeerProcess
from fedswarm.p2p import framing
from fedswarm.p2p.errors import BlobError, P2PError
from fedswarm.p2p.identity import Identity
from fedswarm.p2p.node import NodeConfig, P2PNode
from fedswarm.p2p.roster import Member, Roster
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


async def _ignore(*_: Any) -> None:
    return None


async def _poll(predicate: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return True
        await asyncio.sleep(0.5)
    return bool(await asyncio.to_thread(predicate))


def _finished_rounds(peer: PeerProcess) -> int:
    try:
        return len([r for r in peer.get("/api/rounds") if r.get("round", 0) > 0
                    and r.get("status") in ("complete", "local_only", "aborted")])
    except (OSError, ValueError):
        return -1


def _rejected(peer: PeerProcess) -> dict[str, int]:
    return dict(peer.get("/api/traffic").get("rejected", {}))


async def _send_truncated(node: P2PNode, recipient: str, round_no: int) -> None:
    """What a sender killed mid-body looks like: a signed header for 1000 bytes, 400
    bytes of body, then a clean close."""
    body = bytes(1000)
    header = framing.BlobHeader(
        node.roster.federation_id, node.peer_id, recipient, "plain-update", round_no,
        len(body), hashlib.sha256(body).digest(), time.time(),
    )

    async def go() -> None:
        assert node._host is not None
        with trio.fail_after(10):
            await node._ensure_connected(recipient)
            stream = await node._host.new_stream(
                ID.from_base58(recipient), [TProtocol(framing.BLOB_PROTOCOL)]
            )
            await stream.write(framing.encode_signed_header(header, node.identity))
            await stream.read(64)  # the receiver's "go ahead"
            await stream.write(body[:400])
            await stream.close()

    await node._call(go)


async def _send_forged(node: P2PNode, victim: str, recipient: str, round_no: int) -> None:
    """A header that names another member as sender, signed with our own key."""
    payload = b"forged"
    header = framing.BlobHeader(
        node.roster.federation_id, victim, recipient, "plain-update", round_no,
        len(payload), hashlib.sha256(payload).digest(), time.time(),
    )
    await node._call(node._send_blob_trio, header, payload, 10.0)


async def test_daemon_refuses_hostile_peers_and_keeps_running_rounds(tmp_path: Path) -> None:
    fed = LocalFederation(
        tmp_path, peers=1, rounds=0, secure_aggregation="none", local_steps=1, batch_size=2,
        round_deadline_s=5.0, wait_for_peers=1, overrides={"node": {"max_blob_mb": 1}},
    )
    fed.prepare()
    daemon = fed.peers[0]
    mallory, outsider = Identity.generate(), Identity.generate()
    roster = Roster.load(daemon.directory / "roster.toml").with_member(
        Member("mallory", mallory.peer_id)
    )
    roster.save(daemon.directory / "roster.toml")
    config = NodeConfig(listen="/ip4/127.0.0.1/tcp/0", max_blob_bytes=8 * 2**20)
    member = P2PNode(mallory, roster, config, on_blob=_ignore, on_gossip=_ignore)
    stranger = P2PNode(outsider, roster.with_member(Member("outsider", outsider.peer_id)),
                       config, on_blob=_ignore, on_gossip=_ignore)
    try:
        fed.start()
        assert await _poll(lambda: _finished_rounds(daemon) >= 2, 150), fed.log_tail(daemon.org)
        await member.start()
        await stranger.start()
        await member.dial(daemon.multiaddr)
        current = int(daemon.get("/api/status")["round"])
        outcomes: dict[str, str] = {}

        # a non-member dials and sends: the daemon closes it
        try:
            await stranger.dial(daemon.multiaddr)
            await stranger.send_blob(daemon.peer_id, "plain-update", current, b"x", timeout=10)
            outcomes["non-member"] = "accepted"
        except (P2PError, OSError) as exc:
            outcomes["non-member"] = type(exc).__name__
        # a member replays a message from an earlier round
        await member.send_blob(daemon.peer_id, "plain-update", current - 1, b"replayed",
                               timeout=10)
        # a member forges another member's signature (claims to be the daemon itself)
        with pytest.raises(BlobError):
            await _send_forged(member, daemon.peer_id, daemon.peer_id, current)
        # a member sends a blob over the receiver's size limit (1 MiB here)
        with pytest.raises(BlobError):
            await member.send_blob(daemon.peer_id, "plain-update", current, bytes(2 * 2**20),
                                   timeout=20)
        # a member sends an unknown kind of blob
        await member.send_blob(daemon.peer_id, "no-such-kind", current, b"?", timeout=10)
        # a member's sender dies mid-body
        await _send_truncated(member, daemon.peer_id, current)
        # a member floods gossip; the daemon keeps answering and keeps working
        rounds_before_flood = _finished_rounds(daemon)
        api_latencies = []
        for burst in range(10):
            for _ in range(50):
                await member.publish("heartbeat", b"flood " + bytes(200))
            started = time.monotonic()
            await asyncio.to_thread(daemon.get, "/api/status", 10.0)
            api_latencies.append(time.monotonic() - started)
            del burst
        assert outcomes["non-member"] != "accepted", outcomes

        assert await _poll(lambda: _finished_rounds(daemon) > rounds_before_flood + 1, 90), (
            fed.log_tail(daemon.org)
        )
        assert await _poll(
            lambda: {"not_member", "bad_signature", "too_large", "truncated"}
            <= set(_rejected(daemon)), 20
        ), _rejected(daemon)
        security = daemon.get("/api/security")
        reasons = " | ".join(r["reason"] for r in security["rejected"])
        assert "old_round" in reasons, security["rejected"]
        assert "unknown blob kind" in reasons, security["rejected"]
        assert daemon.running()
        print({"rejected_p2p": _rejected(daemon), "rejected_daemon": security["rejected_counts"],
               "api_s_max_during_flood": max(api_latencies)})
    finally:
        await member.stop()
        await stranger.stop()
        codes = fed.stop()
    assert codes[daemon.org] == 0, fed.log_tail(daemon.org)
