"""Pings reuse one stream per member: an idle federation of 32 must not open ~200
streams a second (docs/reliability.md), and a lost stream costs one new stream, not a
missed ping or a closed link."""

from __future__ import annotations

from typing import Any

import pytest
from fedswarm.p2p import framing
from fedswarm.p2p.node import NodeConfig, P2PNode
from fedswarm.p2p.ping import MAX_PING_STREAMS_PER_PEER, PING_PROTOCOL
from fedswarm.p2p.streams import stream_reader
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from .conftest import connected_pair, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

FAST_PINGS = NodeConfig(ping_interval_s=0.2, maintenance_interval_s=0.1)


async def test_many_pings_to_a_member_use_one_stream(node_factory: Any) -> None:
    a, _, b, _ = await connected_pair(node_factory, FAST_PINGS)
    assert await wait_until(lambda: a.stats()["pings_sent"] >= 10, timeout=30)
    stats = a.stats()
    assert stats["ping_streams_opened"] == 1, stats
    assert stats["dead_links_closed"] == 0
    assert a.latency_ms(b.peer_id) is not None


async def test_a_ping_stream_the_member_reset_is_replaced_without_a_miss(
    node_factory: Any,
) -> None:
    a, _, b, _ = await connected_pair(node_factory, FAST_PINGS)
    assert await wait_until(lambda: a.stats()["pings_sent"] >= 3, timeout=30)

    async def reset_our_stream() -> None:
        await a._pinger._streams[b.peer_id].reset()

    await a._call(reset_our_stream)
    sent = a.stats()["pings_sent"]
    assert await wait_until(lambda: a.stats()["pings_sent"] >= sent + 3, timeout=30)
    assert a.stats()["ping_streams_opened"] == 2
    assert a._pinger._misses.get(b.peer_id, 0) == 0  # the ping that found it reset answered
    assert b.peer_id in a.connected_peers()


async def _echoes(node: P2PNode, peer: str, streams: int) -> list[bool]:
    """Open ``streams`` ping streams to ``peer`` at once, ping on each: which answered."""

    async def ping_each() -> list[bool]:
        assert node._host is not None
        opened, answered = [], []
        for _ in range(streams):  # each stays open while the next is tried
            try:
                stream = await node._host.new_stream(ID.from_base58(peer),
                                                     [TProtocol(PING_PROTOCOL)])
                opened.append(stream)
                await stream.write(b"x" * 32)
                answered.append(await framing.read_exactly(stream_reader(stream), 32) == b"x" * 32)
            except Exception:  # reset by the member: during negotiation or after
                answered.append(False)
        for stream in opened:
            await stream.reset()
        return answered

    result: list[bool] = await node._call(ping_each)
    return result


async def test_a_member_cannot_hold_more_than_two_ping_streams_open(node_factory: Any) -> None:
    # slow pings, so the node's own pinger does not hold one of the streams
    a, _, b, _ = await connected_pair(node_factory, NodeConfig(ping_interval_s=3600.0))
    answered = await _echoes(a, b.peer_id, MAX_PING_STREAMS_PER_PEER + 1)
    assert answered == [True] * MAX_PING_STREAMS_PER_PEER + [False]
