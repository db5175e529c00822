"""Membership view: heartbeat codec, staleness, up/down."""

from __future__ import annotations

import time

import pytest
from fedswarm.p2p.errors import GossipRejectedError
from fedswarm.p2p.identity import Identity
from fedswarm.p2p.membership import HEARTBEAT_TOPIC, Heartbeat, Membership, MembershipConfig


class StaticNode:
    """The few node attributes Membership reads; no network involved."""

    def __init__(self) -> None:
        self.peer_id = Identity.generate().peer_id
        self.listen_addrs = ["/ip4/127.0.0.1/tcp/1/p2p/" + self.peer_id]
        self.published: list[tuple[str, bytes]] = []
        self.learned: dict[str, tuple[str, ...]] = {}

    async def publish(self, topic: str, payload: bytes) -> None:
        self.published.append((topic, payload))

    async def subscribe(self, topic: str) -> None:
        pass

    def latency_ms(self, peer_id: str) -> float | None:
        return 1.5

    def add_peer_addrs(self, peer_id: str, addrs: list[str] | tuple[str, ...]) -> None:
        self.learned[peer_id] = tuple(addrs)


def _hb(peer_id: str, sent_at: float, round: int = 3) -> Heartbeat:
    return Heartbeat(
        peer_id=peer_id,
        org="o",
        addrs=("/ip4/10.0.0.2/tcp/4001",),
        round=round,
        state="training",
        adapter_fingerprint="abc",
        version="0.1",
        sent_at=sent_at,
    )


def test_heartbeat_round_trips() -> None:
    hb = _hb(Identity.generate().peer_id, 1.0)
    assert Heartbeat.decode(hb.encode()) == hb


@pytest.mark.parametrize("raw", [b"", b"{}", b'{"peer_id": 1}', b"\xff"])
def test_malformed_heartbeat_is_rejected(raw: bytes) -> None:
    with pytest.raises(GossipRejectedError):
        Heartbeat.decode(raw)


def test_accepted_heartbeat_updates_view_and_known_addrs() -> None:
    node = StaticNode()
    m = Membership(node, "me")
    peer = Identity.generate().peer_id
    now = time.time()
    m.accept(peer, _hb(peer, now).encode(), now=now)
    view = m.view(now=now)[peer]
    assert (view.round, view.state, view.fingerprint, view.up) == (3, "training", "abc", True)
    assert view.latency_ms == 1.5
    assert node.learned[peer] == ("/ip4/10.0.0.2/tcp/4001",)
    assert m.up_peers(now=now) == {peer}


def test_stale_or_mismatched_heartbeat_is_rejected() -> None:
    m = Membership(StaticNode(), "me", MembershipConfig(max_age_s=30))
    peer, other = Identity.generate().peer_id, Identity.generate().peer_id
    now = time.time()
    with pytest.raises(GossipRejectedError, match="stale"):
        m.accept(peer, _hb(peer, now - 31).encode(), now=now)
    with pytest.raises(GossipRejectedError, match="signed by"):
        m.accept(other, _hb(peer, now).encode(), now=now)
    assert m.view(now=now) == {}


def test_peer_goes_down_after_silence() -> None:
    m = Membership(StaticNode(), "me", MembershipConfig(down_after_s=10))
    peer = Identity.generate().peer_id
    now = time.time()
    m.accept(peer, _hb(peer, now).encode(), now=now)
    assert m.up_peers(now=now + 5) == {peer}
    assert m.up_peers(now=now + 11) == set()
    assert m.view(now=now + 11)[peer].up is False
    assert m.up_peers(timeout_s=20, now=now + 11) == {peer}


async def test_handle_gossip_ignores_other_topics_and_counts_rejects() -> None:
    m = Membership(StaticNode(), "me")
    peer = Identity.generate().peer_id
    await m.handle_gossip("other", peer, b"junk")
    await m.handle_gossip(HEARTBEAT_TOPIC, peer, b"junk")
    assert m.rejected == 1
    await m.publish_now()
    assert m._node.published[0][0] == HEARTBEAT_TOPIC  # type: ignore[attr-defined]


async def test_each_refused_heartbeat_is_reported_with_its_reason() -> None:
    """The daemon counts these in /api/security and /metrics (``on_reject``)."""
    refused: list[tuple[str, str, str]] = []
    m = Membership(StaticNode(), "me", on_reject=lambda *r: refused.append(r))
    peer, other = Identity.generate().peer_id, Identity.generate().peer_id
    now = time.time()
    await m.handle_gossip(HEARTBEAT_TOPIC, peer, _hb(peer, now - 3600).encode())
    await m.handle_gossip(HEARTBEAT_TOPIC, other, _hb(peer, now).encode())
    await m.handle_gossip(HEARTBEAT_TOPIC, peer, b"not json")
    await m.handle_gossip(HEARTBEAT_TOPIC, peer, _hb(peer, now).encode())
    await m.handle_gossip(HEARTBEAT_TOPIC, peer, _hb(peer, now - 1).encode())
    assert [(reason, sender) for reason, sender, _ in refused] == [
        ("heartbeat_stale", peer),
        ("heartbeat_forged", other),
        ("heartbeat_invalid", peer),
        ("heartbeat_out_of_order", peer),
    ]
    assert m.rejected == 4
