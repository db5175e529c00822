"""Membership view: heartbeat codec, staleness, up/down."""

from __future__ import annotations

import asyncio
import time

import pytest
from fedswarm.p2p.errors import GossipRejectedError
from fedswarm.p2p.identity import Identity
from fedswarm.p2p.membership import (
    HEARTBEAT_KIND,
    HEARTBEAT_TOPIC,
    Heartbeat,
    Membership,
    MembershipConfig,
)

from .conftest import StaticNode


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


def test_a_member_down_for_a_moment_stays_present_for_group_plans() -> None:
    """Present (planned with) for three down times after its last heartbeat, so a late
    heartbeat does not reshuffle every member's plan; then it leaves the plans too."""
    m = Membership(StaticNode(), "me", MembershipConfig(down_after_s=10))
    peer = Identity.generate().peer_id
    now = time.time()
    m.accept(peer, _hb(peer, now).encode(), now=now)
    assert m.present_after() == pytest.approx(30.0)
    assert (m.up_peers(now=now + 11), m.present_peers(now=now + 11)) == (set(), {peer})
    assert m.present_peers(now=now + 29) == {peer}
    assert m.present_peers(now=now + 31) == set()


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
    ]
    assert m.rejected == 3


async def test_an_older_copy_of_a_heartbeat_is_dropped_without_a_refusal() -> None:
    """A beat travels two ways (direct, and by gossip every 30 s): the gossip copy
    arriving after the next direct beat is superseded, not a refusal to count."""
    refused: list[tuple[str, str, str]] = []
    m = Membership(StaticNode(), "me", on_reject=lambda *r: refused.append(r))
    peer = Identity.generate().peer_id
    now = time.time()
    await m.handle_message(peer, _hb(peer, now, round=4).encode())
    await m.handle_gossip(HEARTBEAT_TOPIC, peer, _hb(peer, now - 1, round=3).encode())
    assert refused == [] and m.rejected == 0 and m.superseded == 1
    assert m.view()[peer].round == 4


async def test_heartbeats_go_to_connected_members_directly_and_by_gossip_now_and_then() -> None:
    node = StaticNode()
    m = Membership(node, "me", MembershipConfig(gossip_every_s=30.0))
    await m.publish_now(gossip=False)
    await m.publish_now()
    assert [kind for kind, _ in node.sent] == [HEARTBEAT_KIND, HEARTBEAT_KIND]
    assert [topic for topic, _ in node.published] == [HEARTBEAT_TOPIC]
    assert Heartbeat.decode(node.sent[0][1]).peer_id == node.peer_id


@pytest.mark.parametrize(("members", "pace"), [(2, 1.0), (17, 1.0), (33, 2.0), (65, 4.0)])
def test_a_large_roster_stretches_the_interval_and_the_down_time_alike(
    members: int, pace: float
) -> None:
    """Each member receives at most max_received_per_s heartbeats a second in all."""
    m = Membership(StaticNode(members), "me",
                   MembershipConfig(interval_s=2.0, down_after_s=10.0, max_received_per_s=8.0))
    assert m.pace() == pytest.approx(pace)
    assert m.interval() == pytest.approx(2.0 * pace)
    assert m.down_after() == pytest.approx(10.0 * pace)
    assert (members - 1) / m.interval() <= 8.0 + 1e-9
    peer = Identity.generate().peer_id
    now = time.time()
    m.accept(peer, _hb(peer, now).encode(), now=now)
    assert m.up_peers(now=now + 10.0 * pace - 0.1) == {peer}
    assert m.up_peers(now=now + 10.0 * pace + 0.1) == set()


async def test_a_new_round_or_state_goes_out_before_the_stretched_beat() -> None:
    """With 65 members and interval_s 1 s the keep-alive beat is every 4 s (±20 %); a
    change of state goes out 1 s after the last beat, not at the next stretched one."""
    node = StaticNode(65)
    m = Membership(node, "me", MembershipConfig(interval_s=1.0, max_received_per_s=16.0,
                                                gossip_every_s=3600.0))
    assert m.interval() == pytest.approx(4.0)

    async def sent(count: int, within_s: float) -> float:
        started = time.monotonic()
        while len(node.sent) < count and time.monotonic() - started < within_s:
            await asyncio.sleep(0.01)
        assert len(node.sent) == count
        return time.monotonic()

    await m.start()
    try:
        first = await sent(1, 2.0)
        m.update_local(state="training")
        second = await sent(2, 5.0)
        assert 0.9 <= second - first < 3.2  # interval_s after the last beat; 3.2 s: stretched
        assert Heartbeat.decode(node.sent[1][1]).state == "training"
        m.update_local(fingerprint="new", round=0)  # neither round nor state changes
        await asyncio.sleep(1.5)
        assert len(node.sent) == 2
    finally:
        await m.stop()


@pytest.mark.timeout(30)  # the bug this guards against hung the loop for good
async def test_stop_ends_the_beat_even_when_a_change_arrives_with_it() -> None:
    """The daemon's shutdown sets the state "stopped" and stops membership at once; the
    beat loop must end however the two interleave (it once swallowed the cancel, and the
    daemon never exited on SIGTERM)."""
    for yields in range(4):
        m = Membership(StaticNode(), "me", MembershipConfig(interval_s=5.0,
                                                            gossip_every_s=3600.0))
        await m.start()
        await asyncio.sleep(0.05)  # the first beat went out; the loop waits for a change
        started = time.monotonic()
        m.update_local(state="stopped")  # the daemon's order: no await in between
        for _ in range(yields):
            await asyncio.sleep(0)
        await m.stop()
        assert time.monotonic() - started < 2.5, yields  # not after another 5 s beat
        assert m._task is None
