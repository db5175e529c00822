"""A node keeps accepting inbound connections however many it has accepted before.

py-libp2p 0.8.1's swarm held the slot of every inbound connection it ever accepted until
the node stopped (fedswarm.p2p.inbound_connections): after 250 in a process's life it
closed every new one before the security handshake. These tests shrink the cap to 3 so a
handful of connections shows what 250 would.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import multiaddr
import pytest
import trio
from fedswarm.p2p.host import build_host
from fedswarm.p2p.identity import Identity
from fedswarm.p2p.inbound_connections import INBOUND_CAP
from fedswarm.p2p.node import NodeConfig, P2PNode
from libp2p.peer.peerinfo import PeerInfo

from .conftest import Inbox, make_roster, wait_until

LOOPBACK = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
CAP = 3

Refusal = tuple[str, str | None, str]


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.05)
    return predicate()


def run_listener(body: Callable[[Any, list[Refusal]], Awaitable[None]]) -> list[Refusal]:
    """Run ``body(listener_host, refusals)`` with the listener's inbound cap at ``CAP``."""
    refusals: list[Refusal] = []

    async def main() -> None:
        listener = build_host(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"],
                              on_refused=lambda *refusal: refusals.append(refusal))
        listener.get_network()._inbound_limiter.total_tokens = CAP
        with trio.fail_after(90):
            async with listener.run([LOOPBACK]):
                await body(listener, refusals)

    trio.run(main)
    return refusals


def _info(host: Any) -> PeerInfo:
    return PeerInfo(host.get_id(), host.get_addrs())


def test_inbound_connections_that_closed_free_their_slots() -> None:
    async def body(listener: Any, refusals: list[Refusal]) -> None:
        swarm = listener.get_network()
        dialer = build_host(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"])
        async with dialer.run([LOOPBACK]):
            for cycle in range(2 * CAP + 1):
                await dialer.connect(_info(listener))
                assert await _until(lambda: len(swarm.get_connections()) == 1), cycle
                await dialer.disconnect(listener.get_id())
                assert await _until(lambda: swarm._inbound_limiter.borrowed_tokens == 0), (
                    f"cycle {cycle}: the closed connection still holds its slot"
                )
        assert swarm.fedswarm_inbound.open == 0

    assert run_listener(body) == []


@pytest.mark.parametrize("closing_side", ["dialer", "listener"])
def test_a_slot_comes_back_whichever_side_closes(closing_side: str) -> None:
    async def body(listener: Any, refusals: list[Refusal]) -> None:
        swarm = listener.get_network()
        dialer = build_host(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"])
        async with dialer.run([LOOPBACK]):
            await dialer.connect(_info(listener))
            assert await _until(lambda: swarm._inbound_limiter.borrowed_tokens == 1)
            if closing_side == "dialer":
                await dialer.disconnect(listener.get_id())
            else:
                await listener.disconnect(dialer.get_id())
            assert await _until(lambda: swarm._inbound_limiter.borrowed_tokens == 0)
            await dialer.connect(_info(listener))
            assert await _until(lambda: len(swarm.get_connections()) == 1)

    assert run_listener(body) == []


def test_connections_over_the_cap_are_refused_and_counted() -> None:
    async def body(listener: Any, refusals: list[Refusal]) -> None:
        swarm = listener.get_network()
        dialers = [build_host(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"])
                   for _ in range(CAP + 1)]
        async with dialers[0].run([LOOPBACK]), dialers[1].run([LOOPBACK]), \
                dialers[2].run([LOOPBACK]), dialers[3].run([LOOPBACK]):
            for dialer in dialers[:CAP]:
                await dialer.connect(_info(listener))
            assert await _until(lambda: len(swarm.get_connections()) == CAP)
            with pytest.raises(Exception):  # noqa: B017 - py-libp2p's dial error varies
                await dialers[CAP].connect(_info(listener))
            # py-libp2p's dialler retries a few times: each attempt is one refusal.
            assert refusals and {reason for reason, _, _ in refusals} == {INBOUND_CAP}
            refused = len(refusals)
            assert f"the swarm's cap is {CAP}" in refusals[0][2]
            # The open ones are untouched, and a slot freed by one of them is usable.
            assert len(swarm.get_connections()) == CAP
            await dialers[0].disconnect(listener.get_id())
            assert await _until(lambda: swarm._inbound_limiter.borrowed_tokens == CAP - 1)
            await trio.sleep(0.2)
            swarm_of_last = dialers[CAP].get_network()
            swarm_of_last._negative_peer_cache.clear()  # its own 60 s memory of the refusal
            await dialers[CAP].connect(_info(listener))
            assert await _until(lambda: len(swarm.get_connections()) == CAP)
            assert len(refusals) == refused

    assert run_listener(body)


async def test_a_member_restarting_again_and_again_leaves_no_slot_or_task_behind(
    node_factory: Any,
) -> None:
    """The product node, pubsub and message streams included: a member that connects,
    sends and leaves twelve times takes no inbound slot and no task with it."""
    ids = [Identity.generate(), Identity.generate()]
    roster = make_roster(ids)
    a, inbox = await node_factory(ids[0], roster)
    swarm = a._host.get_network()

    async def living_tasks() -> int:
        return trio.lowlevel.current_statistics().tasks_living

    tasks_after_first = 0
    for cycle in range(12):
        b = P2PNode(ids[1], roster, NodeConfig(), on_blob=Inbox().on_blob,
                    on_gossip=Inbox().on_gossip)
        await b.start()
        try:
            await b.dial(a.listen_addrs[0])
            assert await wait_until(lambda: ids[1].peer_id in a.connected_peers())
            await b.send_blob(a.peer_id, "test", cycle, b"x" * 2_000)
            await b._call(b._close_peer, a.peer_id)
        finally:
            await b.stop()
        assert await wait_until(lambda: swarm._inbound_limiter.borrowed_tokens == 0), cycle
        if cycle == 0:
            tasks_after_first = await a._call(living_tasks)
    assert len(inbox.blobs) == 12
    assert swarm.fedswarm_inbound.open == 0
    # A few tasks come and go (pings, redials); a leak would add one per cycle.
    assert await a._call(living_tasks) <= tasks_after_first + 4
