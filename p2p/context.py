"""What the parts of one node share: who it is, its settings, counters, live objects.

Connections, ping, gossip, blob transfer and start-up each need the node's
identity, its configuration, its counters, the current roster (which
``P2PNode.set_roster`` swaps while the node runs) and the libp2p objects that
exist once it runs. They get all of it as one :class:`NodeContext` instead of
each taking the same five arguments.

The libp2p host, the pubsub router, the node's task nursery and the parts built
around the host (message streams, DHT discovery) exist only on the trio thread
and only once start-up (:mod:`.runtime`) has built them; the asyncio loop is known
once ``P2PNode.start()`` runs. They live in :class:`NodeHandles`, where a field
is ``None`` exactly as long as its object does not exist yet, which is when the
code that needs it must not run. Only the trio thread uses these objects; asyncio
code may read the references (tests and benchmarks do, ``stats()`` reads a
counter of the DHT) but must not call into them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import trio
from libp2p.abc import IHost
from libp2p.pubsub.pubsub import Pubsub

from .config import NodeConfig
from .counters import NodeCounters
from .dht import DhtDiscovery
from .identity import Identity
from .message_streams import MessageStreams
from .roster import Roster


@dataclass
class NodeHandles:
    """References set in start-up order; ``None`` until each exists."""

    loop: asyncio.AbstractEventLoop | None = None
    host: IHost | None = None
    pubsub: Pubsub | None = None
    nursery: trio.Nursery | None = None
    messages: MessageStreams | None = None
    dht: DhtDiscovery | None = None  # only with ``enable_dht``

    def require_host(self) -> IHost:
        """The host, for code that can only run after start-up built it."""
        assert self.host is not None
        return self.host

    def require_nursery(self) -> trio.Nursery:
        """The node's task nursery, for code that runs after start-up opened it."""
        assert self.nursery is not None
        return self.nursery

    def require_loop(self) -> asyncio.AbstractEventLoop:
        """The daemon's asyncio loop, known once ``start()`` ran."""
        assert self.loop is not None
        return self.loop


@dataclass(frozen=True)
class NodeContext:
    """One node's shared state; the roster is read through ``current_roster`` each time."""

    identity: Identity
    config: NodeConfig
    current_roster: Callable[[], Roster]
    counters: NodeCounters = field(default_factory=NodeCounters)
    handles: NodeHandles = field(default_factory=NodeHandles)

    @property
    def me(self) -> str:
        """Our own peer id."""
        return self.identity.peer_id

    @property
    def roster(self) -> Roster:
        """The roster as of now (it may change between two reads)."""
        return self.current_roster()
