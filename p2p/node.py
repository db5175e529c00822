"""P2PNode: the asyncio face of the libp2p host.

The daemon only ever sees this class. Internally one thread runs trio and owns
every libp2p object (see :mod:`.trio_bridge`). The node

* listens on TCP with Noise + Yamux only (:mod:`.host`, wired up by :mod:`.runtime`),
* closes any connection whose peer id is not on the roster right after the
  Noise handshake names it, and re-checks the roster on every blob and gossip,
* keeps connections to roster members open, re-dialling with exponential
  backoff (a dial costs ~250 ms, so connections are kept between rounds;
  :mod:`.connections`), and pings them to notice dead links (:mod:`.ping`),
* moves blobs over one stream each with signed headers (:mod:`.framing`,
  :mod:`.blob_sender`, :mod:`.blob_receiver`) and small messages over one
  long-lived stream per member (:mod:`.message_streams`),
* carries small signed gossip over GossipSub (:mod:`.envelope`, :mod:`.gossip`), and
* announces its listen addresses on an internal topic so members that only
  know a bootstrap peer find each other.

This module is the front only: it checks arguments on the caller's (asyncio)
side, hands the work to the trio thread and assembles ``stats()``. The parts
share the node's identity, settings, counters, roster and live libp2p objects
through one :class:`~.context.NodeContext`.
``NodeConfig`` and ``BlobHeader`` are re-exported here, where the daemon and the
tests import them from.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from libp2p.abc import IHost

from .blob_receiver import BlobHandler
from .config import NodeConfig
from .connections import peer_id_of
from .context import NodeContext
from .errors import BlobTooLargeError, NodeNotRunningError, NotAMemberError, P2PError
from .framing import BlobHeader
from .gossip import GossipHandler
from .identity import Identity
from .ping import PING_PROTOCOL
from .roster import Roster
from .runtime import NodeRuntime
from .trio_bridge import TrioThread

__all__ = [
    "PING_PROTOCOL",
    "BlobHandler",
    "BlobHeader",
    "GossipHandler",
    "NodeConfig",
    "P2PNode",
]

log = logging.getLogger("fedswarm.p2p.node")


class P2PNode:
    """One organisation's libp2p presence, driven from asyncio."""

    def __init__(
        self,
        identity: Identity,
        roster: Roster,
        config: NodeConfig,
        *,
        on_blob: BlobHandler,
        on_gossip: GossipHandler,
    ) -> None:
        self.identity = identity
        self.config = config
        self._roster = roster
        self._bridge = TrioThread(name=f"fedswarm-p2p-{identity.peer_id[-6:]}")
        self._started = False
        self._stopped = False
        ctx = NodeContext(identity, config, self._current_roster)
        self._counters, self._handles = ctx.counters, ctx.handles
        self._runtime = NodeRuntime(ctx, on_blob=on_blob, on_gossip=on_gossip)
        self._connections = self._runtime.connections
        self._pinger = self._runtime.pinger
        self._gossip = self._runtime.gossip
        self._sender = self._runtime.sender
        self._receiver = self._runtime.receiver

    def _current_roster(self) -> Roster:
        """The roster as of now: every part reads it through this, so set_roster reaches all."""
        return self._roster

    # ------------------------------------------------------------------ asyncio API

    async def start(self) -> None:
        """Start libp2p in its own thread and listen; returns once listening."""
        if self._started:
            return
        self._handles.loop = asyncio.get_running_loop()
        self._started = True
        await asyncio.to_thread(self._bridge.start, self._runtime.main)
        log.info("p2p node %s listening on %s", self.peer_id, self._runtime.listen_addrs)

    async def stop(self) -> None:
        """Close every connection and end the p2p thread (idempotent, bounded)."""
        if self._stopped or not self._started:
            self._stopped = True
            return
        self._stopped = True
        await asyncio.to_thread(self._bridge.stop, 10.0)

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    @property
    def listen_addrs(self) -> list[str]:
        """Full multiaddrs including ``/p2p/<peer id>``."""
        return list(self._runtime.listen_addrs)

    @property
    def member_count(self) -> int:
        """Members on the roster now, this node included."""
        return len(self._roster.members)

    @property
    def roster(self) -> Roster:
        return self._roster

    async def dial(self, multiaddr_str: str) -> str:
        """Connect to ``/.../p2p/<id>``; returns the peer id.

        Raises :class:`NotAMemberError` before dialling when the id is not on
        the roster, :class:`PeerUnreachableError` when the dial fails.
        """
        peer_id = peer_id_of(multiaddr_str)
        self._require_member(peer_id)
        await self._call(self._connections.dial, peer_id, [multiaddr_str])
        return peer_id

    def connected_peers(self) -> set[str]:
        """Roster members with at least one open connection."""
        return self._connections.connected_peers()

    def add_peer_addrs(self, peer_id: str, addrs: list[str] | tuple[str, ...]) -> None:
        """Remember dial addresses for a member (e.g. learned from a heartbeat)."""
        self._connections.add_peer_addrs(peer_id, addrs)

    async def send_blob(
        self, peer_id: str, kind: str, round: int, payload: bytes, *, timeout: float | None = None
    ) -> None:
        """Send ``payload`` to a member over a fresh stream and wait for its ack.

        Raises a :class:`BlobError` subclass (too large, timeout, rejected by
        the receiver, ...), :class:`NotAMemberError`,
        :class:`ProtocolNegotiationError` when the peer does not speak the blob
        protocol, or :class:`PeerUnreachableError` when no address of the peer answers.
        """
        self._require_member(peer_id)
        if len(payload) > self.config.max_blob_bytes:
            raise BlobTooLargeError(
                f"blob is {len(payload)} bytes, limit {self.config.max_blob_bytes}"
            )
        limit = self.config.blob_timeout_s if timeout is None else timeout
        await self._call(self._sender.send_blob, peer_id, kind, round, payload, limit)

    async def send_message(
        self, peer_id: str, kind: str, round: int, payload: bytes, *, timeout: float | None = None
    ) -> None:
        """Send a small payload to a member over its long-lived message stream.

        Cheaper than :meth:`send_blob` (no stream set-up, no acknowledgement) and
        delivered in order to the receiver's ``on_blob`` handler with the same signed
        header and the same checks. It returns once the bytes are written, so a
        receiver that dies or refuses the message does not raise here; use
        ``send_blob`` when the sender must know. Raises :class:`BlobTooLargeError`
        above ``max_message_bytes``, :class:`NotAMemberError`, or a
        :class:`BlobError` / :class:`PeerUnreachableError` when it cannot be written.
        """
        self._require_member(peer_id)
        self._require_message_size(payload)
        limit = self.config.blob_timeout_s if timeout is None else timeout
        await self._call(self._sender.send_message, peer_id, kind, round, payload, limit)

    async def send_to_connected(
        self, kind: str, round: int, payload: bytes, *, timeout: float | None = None
    ) -> int:
        """Start sending a small payload to every member connected now whose message
        stream is idle; returns how many writes it started, without waiting for them.

        For periodic news the next copy supersedes (membership heartbeats): a member
        still being written to is skipped rather than queued for, each write may take
        up to ``timeout`` on its own, and a failed write is dropped, never raised
        (counted as ``messages_skipped_busy`` and ``messages_not_sent``). Direct, so
        each member receives one copy, where a gossip message reaches it from several
        mesh peers and relays.
        """
        self._require_message_size(payload)
        peers = sorted(self.connected_peers() - {self.peer_id})  # members only
        limit = self.config.blob_timeout_s if timeout is None else timeout
        started: int = await self._call(
            self._sender.send_message_to_idle, peers, kind, round, payload, limit)
        return started

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish a small signed message (< 64 KiB) to ``topic``."""
        data = self._gossip.seal(topic, payload)
        await self._call(self._gossip.publish, topic, data)

    async def subscribe(self, topic: str) -> None:
        """Deliver verified messages on ``topic`` to ``on_gossip`` (idempotent)."""
        await self._call(self._gossip.subscribe, topic)

    def set_roster(self, roster: Roster) -> None:
        """Swap the roster live; connections of removed members are closed."""
        if roster.federation_id != self._roster.federation_id:
            raise P2PError(
                f"roster is for federation {roster.federation_id!r}, "
                f"node runs {self._roster.federation_id!r}"
            )
        self._roster = roster
        if self._bridge.running and self._handles.nursery is not None:
            nursery = self._handles.nursery
            drop = self._connections.drop_non_members
            self._bridge.run_sync_soon(lambda: nursery.start_soon(drop))

    def stats(self) -> dict[str, Any]:
        """Counters since start: bytes/blobs sent and received, rejections by reason."""
        out = self._counters.snapshot()
        inbound = self._receiver.inbound
        out["inbound_blobs_in_flight"] = inbound.blobs
        out["inbound_bytes_in_flight"] = inbound.bytes
        out["inbound_waited"] = inbound.waited_total
        out["connected_peers"] = len(self.connected_peers())
        dht = self._handles.dht
        out["dht_records_used"] = dht.records_used if dht is not None else 0
        return out

    def recent_rejections(self) -> list[dict[str, Any]]:
        """The latest refused connections, blobs, messages and gossip, newest first:
        ``{ts, peer_id, reason, detail}`` (bounded; ``stats()["rejected"]`` counts all)."""
        return self._counters.recent_rejections()

    def count_rejection(self, reason: str, peer_id: str | None = None, detail: str = "") -> None:
        """Count a refusal decided above the node (a heartbeat membership refused), so
        every refusal shows in one place. Thread-safe."""
        self._counters.reject(reason, peer_id, detail)

    def latency_ms(self, peer_id: str) -> float | None:
        """Smoothed round-trip time of the last pings to ``peer_id``."""
        return self._pinger.latency_ms(peer_id)

    async def __aenter__(self) -> P2PNode:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ helpers

    def _require_message_size(self, payload: bytes) -> None:
        if len(payload) > self.config.max_message_bytes:
            raise BlobTooLargeError(
                f"message is {len(payload)} bytes, limit {self.config.max_message_bytes}; "
                "use send_blob"
            )

    def _require_member(self, peer_id: str) -> None:
        if not self._roster.is_member(peer_id):
            raise NotAMemberError(f"{peer_id} is not on the roster of {self._roster.federation_id}")

    def ended_unexpectedly(self) -> bool:
        """True once the p2p thread has ended although ``stop()`` was never called."""
        return self._started and not self._stopped and not self._bridge.running

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``await fn(*args)`` on the trio thread, the only one that touches libp2p."""
        if not self._started or self._stopped or not self._bridge.running:
            raise NodeNotRunningError("p2p node is not running (call start() first)")
        return await self._bridge.call(fn, *args)

    # ------------------------------------------------------------------ test and bench hooks
    # Hostile-peer tests and bench/p2p.py drive the trio side directly through
    # ``_call``; these keep the names they use. Call the coroutines only via ``_call``.

    @property
    def _host(self) -> IHost | None:
        return self._handles.host

    @property
    def _known_addrs(self) -> dict[str, list[str]]:
        return self._connections.known_addrs

    async def _ensure_connected(self, peer_id: str) -> None:
        await self._connections.ensure_connected(peer_id)

    async def _close_peer(self, peer_id: str) -> None:
        await self._connections.close_peer(peer_id)

    async def _publish_trio(self, topic: str, data: bytes, count: bool = True) -> None:
        await self._gossip.publish(topic, data, count)

    async def _send_blob_trio(self, header: BlobHeader, payload: bytes, timeout: float) -> None:
        """Send a header built in advance (hostile-peer tests forge them this way)."""
        await self._sender.send_prebuilt(header, payload, timeout)
