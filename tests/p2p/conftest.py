"""Shared fixtures for p2p tests: real identities, rosters and nodes on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from fedswarm.p2p.framing import BlobHeader
from fedswarm.p2p.identity import Identity
from fedswarm.p2p.node import NodeConfig, P2PNode
from fedswarm.p2p.roster import Member, Roster


class Inbox:
    """Collects what a node's handlers received."""

    def __init__(self) -> None:
        self.blobs: list[tuple[BlobHeader, bytes]] = []
        self.gossip: list[tuple[str, str, bytes]] = []
        self.fail_blobs = False
        self.failed = 0  # handler calls that raised because of fail_blobs
        # When set, the handler holds each blob (keeps it "in flight") until
        # the gate opens; ``holding`` counts blobs currently held.
        self.gate: asyncio.Event | None = None
        self.holding = 0

    async def on_blob(self, header: BlobHeader, data: bytes) -> None:
        if self.fail_blobs:
            self.failed += 1
            raise RuntimeError("handler exploded on purpose")
        if self.gate is not None:
            self.holding += 1
            try:
                await asyncio.wait_for(self.gate.wait(), timeout=60)
            finally:
                self.holding -= 1
        self.blobs.append((header, data))

    async def on_gossip(self, topic: str, sender: str, payload: bytes) -> None:
        self.gossip.append((topic, sender, payload))


def make_roster(identities: list[Identity], federation_id: str = "test-fed") -> Roster:
    return Roster(
        federation_id,
        tuple(Member(org=f"org{i}", peer_id=ident.peer_id) for i, ident in enumerate(identities)),
    )


async def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll a condition (bounded): network tests may not sleep a fixed time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


async def connected_pair(
    node_factory: Callable[..., Any], config: NodeConfig | None = None
) -> tuple[P2PNode, Inbox, P2PNode, Inbox]:
    """Two members of one roster, started by ``node_factory`` and connected."""
    ids = [Identity.generate(), Identity.generate()]
    roster = make_roster(ids)
    a, inbox_a = await node_factory(ids[0], roster, config)
    b, inbox_b = await node_factory(ids[1], roster, config)
    assert await b.dial(a.listen_addrs[0]) == a.peer_id
    # Both ends: the dialler sees the connection a moment before the listener has
    # registered it, and a test that then opens a stream from ``a`` would dial instead.
    assert await wait_until(lambda: a.peer_id in b.connected_peers())
    assert await wait_until(lambda: b.peer_id in a.connected_peers())
    return a, inbox_a, b, inbox_b


@pytest.fixture
async def node_factory() -> AsyncIterator[Callable[..., Any]]:
    """Start nodes on 127.0.0.1 and always stop them."""
    nodes: list[P2PNode] = []

    async def make(
        identity: Identity, roster: Roster, config: NodeConfig | None = None
    ) -> tuple[P2PNode, Inbox]:
        inbox = Inbox()
        node = P2PNode(
            identity,
            roster,
            config or NodeConfig(),
            on_blob=inbox.on_blob,
            on_gossip=inbox.on_gossip,
        )
        await node.start()
        nodes.append(node)
        return node, inbox

    yield make
    for node in nodes:
        await node.stop()


class StaticNode:
    """The few node attributes Membership reads; no network involved."""

    def __init__(self, members: int = 4) -> None:
        self.members = members
        self.sent: list[tuple[str, bytes]] = []
        self.peer_id = Identity.generate().peer_id
        self.listen_addrs = ["/ip4/127.0.0.1/tcp/1/p2p/" + self.peer_id]
        self.published: list[tuple[str, bytes]] = []
        self.learned: dict[str, tuple[str, ...]] = {}

    async def publish(self, topic: str, payload: bytes) -> None:
        self.published.append((topic, payload))

    async def subscribe(self, topic: str) -> None:
        pass

    @property
    def member_count(self) -> int:
        return self.members

    async def send_to_connected(
        self, kind: str, round: int, payload: bytes, *, timeout: float | None = None
    ) -> int:
        self.sent.append((kind, payload))
        return 1

    def latency_ms(self, peer_id: str) -> float | None:
        return 1.5

    def add_peer_addrs(self, peer_id: str, addrs: list[str] | tuple[str, ...]) -> None:
        self.learned[peer_id] = tuple(addrs)
