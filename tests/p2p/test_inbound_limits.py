"""Inbound blob admission: bounded blobs and bytes in flight, waiting, then "busy".

The limiter alone runs on a real trio loop; the loopback tests use two real
nodes (Noise + Yamux) whose receiver holds blobs in its handler so they stay
in flight while more arrive.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

import pytest
import trio
from fedswarm.p2p.errors import BlobBusyError
from fedswarm.p2p.identity import Identity
from fedswarm.p2p.inbound import InboundLimiter, InboundLimits
from fedswarm.p2p.node import NodeConfig

from .conftest import make_roster, wait_until


def _run(fn: Any) -> Any:
    async def bounded() -> Any:
        with trio.fail_after(10):
            return await fn()

    return trio.run(bounded)


def test_blob_over_the_per_peer_limit_waits_for_room_then_is_admitted() -> None:
    async def scenario() -> tuple[bool, int, int]:
        limiter = InboundLimiter(InboundLimits(max_blobs_per_peer=1, wait_s=5))
        first = await limiter.acquire("peer-a", 10)
        admitted = False

        async def second() -> None:
            nonlocal admitted
            slot = await limiter.acquire("peer-a", 10)
            admitted = True
            slot.release()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(second)
            await trio.sleep(0.1)
            assert not admitted and limiter.waiting == 1
            other = await limiter.acquire("peer-b", 10)  # another peer is not held up
            other.release()
            first.release()
        return admitted, limiter.waited_total, limiter.blobs

    admitted, waited, in_flight = _run(scenario)
    assert admitted and waited == 1 and in_flight == 0


def test_blob_is_refused_busy_when_no_room_frees_within_the_wait() -> None:
    async def scenario() -> tuple[str, int, int]:
        limiter = InboundLimiter(InboundLimits(max_bytes=100, wait_s=0.2))
        held = await limiter.acquire("peer-a", 80)
        with pytest.raises(BlobBusyError) as info:
            await limiter.acquire("peer-b", 30)
        held.release()
        return str(info.value), limiter.refused_total, limiter.bytes

    message, refused, in_flight = _run(scenario)
    assert "no room after 0.2 s" in message and refused == 1 and in_flight == 0


def test_lone_blob_larger_than_the_byte_budget_is_admitted() -> None:
    async def scenario() -> int:
        limiter = InboundLimiter(InboundLimits(max_bytes=100, wait_s=0))
        slot = await limiter.acquire("peer-a", 500)
        held = limiter.bytes
        slot.release()
        slot.release()  # idempotent
        return held

    assert _run(scenario) == 500


def test_waiting_blobs_are_bounded_too() -> None:
    async def scenario() -> str:
        limiter = InboundLimiter(InboundLimits(max_blobs=1, wait_s=5))
        await limiter.acquire("peer-a", 1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(limiter.acquire, "peer-b", 1)  # waits (the one allowed)
            await trio.sleep(0.05)
            with pytest.raises(BlobBusyError) as info:
                await limiter.acquire("peer-c", 1)
            nursery.cancel_scope.cancel()
        return str(info.value)

    assert "too many blobs already waiting" in _run(scenario)


# -- fair share: one peer cannot keep the others out ---------------------------------------


async def _fill(limiter: InboundLimiter, peer: str, size: int) -> list[Any]:
    """Acquire ``size``-byte blobs for ``peer`` until the limiter says busy."""
    slots = []
    while True:
        try:
            slots.append(await limiter.acquire(peer, size))
        except BlobBusyError:
            return slots


def test_one_peer_cannot_hold_more_than_half_the_byte_budget() -> None:
    async def scenario() -> tuple[int, int, str]:
        limits = InboundLimits(max_bytes=100, max_blobs=64, max_blobs_per_peer=64, wait_s=0)
        limiter = InboundLimiter(limits)
        greedy = await _fill(limiter, "peer-a", 10)
        held = limiter.peer_bytes("peer-a")
        with pytest.raises(BlobBusyError) as info:
            await limiter.acquire("peer-a", 10)
        # While peer-a holds all it may, another peer's blob up to a quarter gets in.
        other = await limiter.acquire("peer-b", 25)
        other.release()
        for slot in greedy:
            slot.release()
        return held, limiter.bytes + limiter.peer_bytes("peer-a"), str(info.value)

    held, left, message = _run(scenario)
    assert held == 50 and left == 0
    assert "one peer at most half" in message and "50 from this peer" in message


def test_each_further_greedy_peer_gets_half_of_what_is_left_and_room_never_runs_out() -> None:
    async def scenario() -> list[int]:
        limits = InboundLimits(max_bytes=1000, max_blobs=512, max_blobs_per_peer=512, wait_s=0)
        limiter = InboundLimiter(limits)
        for peer in ("peer-a", "peer-b", "peer-c"):
            await _fill(limiter, peer, 5)
        await limiter.acquire("honest", 60)  # 2 * 60 + 875 <= 1000
        return [limiter.peer_bytes(p) for p in ("peer-a", "peer-b", "peer-c", "honest")]

    assert _run(scenario) == [500, 250, 125, 60]


def test_large_blob_up_to_half_the_budget_is_admitted_beside_small_ones() -> None:
    async def scenario() -> int:
        limiter = InboundLimiter(InboundLimits(max_bytes=100, wait_s=0))
        small = await limiter.acquire("peer-b", 2)
        big = await limiter.acquire("peer-a", 49)  # 2 * 49 + 2 <= 100
        with pytest.raises(BlobBusyError):
            await limiter.acquire("peer-c", 25)  # 2 * 25 + 51 > 100
        held = limiter.bytes
        small.release()
        big.release()
        return held

    assert _run(scenario) == 51


def test_blob_waiting_on_a_greedy_peer_is_admitted_when_it_lets_go() -> None:
    async def scenario() -> bool:
        limits = InboundLimits(max_bytes=100, max_blobs=64, max_blobs_per_peer=64, wait_s=5)
        limiter = InboundLimiter(limits)
        greedy = await _fill_without_waiting(limiter, "peer-a", 10)
        admitted = False

        async def big() -> None:
            nonlocal admitted
            (await limiter.acquire("peer-b", 40)).release()  # 2 * 40 + 50 > 100: waits
            admitted = True

        async with trio.open_nursery() as nursery:
            nursery.start_soon(big)
            await trio.sleep(0.05)
            assert not admitted and limiter.waiting == 1
            for slot in greedy[:3]:
                slot.release()  # 2 * 40 + 20 <= 100
        return admitted

    assert _run(scenario)


async def _fill_without_waiting(limiter: InboundLimiter, peer: str, size: int) -> list[Any]:
    slots = []
    while limiter._fits(peer, size):
        slots.append(await limiter.acquire(peer, size))
    return slots


def test_one_peer_cannot_fill_the_waiting_room() -> None:
    async def scenario() -> str:
        limiter = InboundLimiter(InboundLimits(max_blobs=8, max_blobs_per_peer=1, wait_s=5))
        await limiter.acquire("peer-a", 1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(limiter.acquire, "peer-a", 1)  # waits: its one waiting place
            await trio.sleep(0.05)
            with trio.fail_after(1), pytest.raises(BlobBusyError) as info:
                await limiter.acquire("peer-a", 1)  # refused at once, not after wait_s
            (await limiter.acquire("peer-b", 1)).release()  # others are not held up
            assert limiter.waiting == 1
            nursery.cancel_scope.cancel()
        return str(info.value)

    assert "too many blobs from this peer already waiting" in _run(scenario)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        InboundLimits(max_blobs_per_peer=0)


async def _pair(node_factory: Any, config: NodeConfig) -> tuple[Any, Any, Any]:
    ids = [Identity.generate(), Identity.generate()]
    roster = make_roster(ids)
    receiver, inbox = await node_factory(ids[0], roster, config)
    sender, _ = await node_factory(ids[1], roster, NodeConfig())
    assert await sender.dial(receiver.listen_addrs[0]) == receiver.peer_id
    assert await wait_until(lambda: receiver.peer_id in sender.connected_peers())
    return receiver, inbox, sender


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_extra_concurrent_blob_is_refused_busy_and_the_admitted_ones_arrive_intact(
    node_factory: Any,
) -> None:
    config = NodeConfig(max_inbound_blobs_per_peer=2, inbound_wait_s=1.0)
    receiver, inbox, sender = await _pair(node_factory, config)
    inbox.gate = asyncio.Event()
    payloads = [os.urandom(2 * 2**20 + i) for i in range(3)]

    held = [
        asyncio.create_task(sender.send_blob(receiver.peer_id, "update", i, payloads[i]))
        for i in range(2)
    ]
    assert await wait_until(lambda: inbox.holding == 2)
    with pytest.raises(BlobBusyError) as info:
        await sender.send_blob(receiver.peer_id, "update", 2, payloads[2], timeout=30)
    assert "no room after 1 s" in info.value.reason
    stats = receiver.stats()
    assert stats["rejected"].get("busy") == 1 and stats["inbound_waited"] == 1
    assert stats["inbound_blobs_in_flight"] == 2
    assert stats["inbound_bytes_in_flight"] == len(payloads[0]) + len(payloads[1])

    inbox.gate.set()
    await asyncio.wait_for(asyncio.gather(*held), timeout=60)
    got = {h.round: (h, data) for h, data in inbox.blobs}
    assert sorted(got) == [0, 1]
    for i in (0, 1):
        header, data = got[i]
        assert data == payloads[i] and hashlib.sha256(data).digest() == header.sha256
    assert await wait_until(lambda: receiver.stats()["inbound_blobs_in_flight"] == 0)
    # Room is back: the refused blob goes through on a retry.
    await sender.send_blob(receiver.peer_id, "update", 2, payloads[2], timeout=30)
    assert inbox.blobs[-1][1] == payloads[2]


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_blob_waiting_for_room_is_admitted_when_a_held_blob_finishes(
    node_factory: Any,
) -> None:
    config = NodeConfig(max_inbound_blobs=1, inbound_wait_s=30.0)
    receiver, inbox, sender = await _pair(node_factory, config)
    inbox.gate = asyncio.Event()
    first = asyncio.create_task(sender.send_blob(receiver.peer_id, "update", 0, b"a" * 1000))
    assert await wait_until(lambda: inbox.holding == 1)
    second = asyncio.create_task(sender.send_blob(receiver.peer_id, "update", 1, b"b" * 1000))
    assert await wait_until(lambda: receiver.stats()["inbound_waited"] == 1)
    assert inbox.holding == 1 and not second.done()
    inbox.gate.set()
    await asyncio.wait_for(asyncio.gather(first, second), timeout=60)
    assert sorted((h.round, data[:1]) for h, data in inbox.blobs) == [(0, b"a"), (1, b"b")]
    assert "busy" not in receiver.stats()["rejected"]


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_pipelined_blob_waits_for_room_longer_than_a_yamux_write_may_block(
    node_factory: Any,
) -> None:
    # The second blob's header and first window of body are written before the
    # accept. It waits for room 7 s, past Yamux's 5 s limit on a blocked write,
    # so that early write must never need the receiver to read. At 12 MiB it is
    # larger than the windows py-libp2p grows to (~8 MiB), so writing more than
    # the guaranteed initial window could block here.
    config = NodeConfig(max_inbound_blobs=1, inbound_wait_s=30.0)
    receiver, inbox, sender = await _pair(node_factory, config)
    inbox.gate = asyncio.Event()
    payloads = [os.urandom(2 * 2**20), os.urandom(12 * 2**20)]
    assert len(payloads[1]) <= sender.config.pipeline_max_blob_bytes
    first = asyncio.create_task(sender.send_blob(receiver.peer_id, "update", 0, payloads[0]))
    assert await wait_until(lambda: inbox.holding == 1)
    second = asyncio.create_task(sender.send_blob(receiver.peer_id, "update", 1, payloads[1]))
    assert await wait_until(lambda: receiver.stats()["inbound_waited"] == 1)
    await asyncio.sleep(7)
    assert not second.done()
    inbox.gate.set()
    await asyncio.wait_for(asyncio.gather(first, second), timeout=60)
    got = sorted((h.round, data) for h, data in inbox.blobs)
    assert got == [(0, payloads[0]), (1, payloads[1])]
