"""P2PNode: the asyncio face of the libp2p host.

The daemon only ever sees this class. Internally one thread runs trio and owns
every libp2p object (see :mod:`.trio_bridge`). The node

* listens on TCP with Noise + Yamux only (:mod:`.host`),
* closes any connection whose peer id is not on the roster right after the
  Noise handshake names it, and re-checks the roster on every blob and gossip,
* keeps connections to roster members open, re-dialling with exponential
  backoff (a dial costs ~250 ms, so connections are kept between rounds),
* moves blobs over one stream each with signed headers (:mod:`.framing`),
* carries small signed gossip over GossipSub (:mod:`.envelope`), and
* announces its listen addresses on an internal topic so members that only
  know a bootstrap peer find each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.stream_muxer.yamux.yamux import DEFAULT_WINDOW_SIZE as _YAMUX_WINDOW
from libp2p.stream_muxer.yamux.yamux import HEADER_SIZE as _YAMUX_HEADER
from libp2p.stream_muxer.yamux.yamux import MAX_MESSAGE_SIZE as _YAMUX_FRAME
from libp2p.tools.anyio_service import background_trio_service

from . import framing
from .admission import header_refusal, refusal_error
from .config import NodeConfig
from .counters import NodeCounters
from .dht import DhtDiscovery
from .envelope import MAX_GOSSIP_PAYLOAD, GossipEnvelope, open_envelope, seal
from .errors import (
    BlobBusyError,
    BlobRejectedError,
    BlobSignatureError,
    BlobTimeoutError,
    BlobTooLargeError,
    BlobTruncatedError,
    GossipRejectedError,
    NodeNotRunningError,
    NotAMemberError,
    P2PError,
    PeerUnreachableError,
)
from .framing import BlobHeader
from .host import build_host
from .identity import Identity
from .inbound import InboundLimiter, InboundLimits
from .mdns import InterfaceMdnsDiscovery
from .message_streams import MESSAGE_PROTOCOL, MessageStreams
from .negotiation import open_stream_with, proposal
from .roster import Roster
from .streams import close_stream_quietly, reset_stream, stream_reader
from .trio_bridge import TrioThread, wait_asyncio_future

log = logging.getLogger("fedswarm.p2p.node")

BlobHandler = Callable[[BlobHeader, bytes], Awaitable[None]]
GossipHandler = Callable[[str, str, bytes], Awaitable[None]]

PING_PROTOCOL = "/fedswarm/ping/1.0.0"
_ANNOUNCE_TOPIC = "_fedswarm_addrs"
# Yamux cuts every write into frames of at most 65524 payload bytes, each one
# Noise-encrypted, sent and woken up for separately. A 256 KiB write used to
# become four full frames plus a 48-byte fifth; a whole number of frames per
# write sends 20 % fewer frames for the same bytes.
_FRAME_PAYLOAD = _YAMUX_FRAME - _YAMUX_HEADER
_CHUNK = 4 * _FRAME_PAYLOAD
# A small blob's header and first body bytes go out in one write, before the
# accept: a new Yamux stream may send its initial receive window (256 KiB)
# without a single read by the peer, so this write never waits on a receiver
# that is still checking the header, waiting for inbound room, or refusing.
# One write of 4 whole frames (262096 B) fits that window.
_FIRST_WRITE = min(_CHUNK, _YAMUX_WINDOW)
# Hashing a payload up to this size inline costs the trio thread at most about
# 1.5 ms; handing it to a worker thread cost more than that on 2 cores (the
# thread competes with the stream negotiation it was meant to overlap):
# measured 1 MiB blobs 12.7 ms inline vs 13.3-13.8 ms threaded, crossover
# between 2 and 4 MiB (docs/performance.md).
_INLINE_HASH_MAX_BYTES = 2 * 1024 * 1024
_BLOB_PROPOSAL = proposal(TProtocol(framing.BLOB_PROTOCOL))
_DIAL_TIMEOUT_S = 10.0
_SEEN_CACHE = 4096
_PING_TIMEOUT_S = 5.0
_PING_MISSES_BEFORE_CLOSE = 2


class _Notifee(INotifee):
    """Connection events from libp2p (called on the trio thread)."""

    def __init__(self, node: P2PNode) -> None:
        self._node = node

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._node._on_connected(str(conn.muxed_conn.peer_id))

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._node._on_disconnected(str(conn.muxed_conn.peer_id))

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass


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
        self._on_blob = on_blob
        self._on_gossip = on_gossip
        self._bridge = TrioThread(name=f"fedswarm-p2p-{identity.peer_id[-6:]}")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()  # guards the small dicts read from asyncio
        self._conn_counts: Counter[str] = Counter()
        self._latency: dict[str, float] = {}
        self._known_addrs: dict[str, list[str]] = {}
        self._counters = NodeCounters()
        self._listen_addrs: list[str] = []
        self._started = False
        self._stopped = False
        # trio-thread-only state
        self._host: IHost | None = None
        self._pubsub: Pubsub | None = None
        self._nursery: trio.Nursery | None = None
        self._subscribed: set[str] = set()
        self._backoff: dict[str, tuple[float, float]] = {}  # peer -> (next_try, delay)
        self._dialing: set[str] = set()
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._ping_misses: dict[str, int] = {}
        self._dht: DhtDiscovery | None = None
        self._messages: MessageStreams | None = None
        self._inbound = InboundLimiter(
            InboundLimits(
                max_bytes=config.max_inbound_bytes,
                max_blobs=config.max_inbound_blobs,
                max_blobs_per_peer=config.max_inbound_blobs_per_peer,
                # Refuse as "busy" well before the stream's own timeout resets it.
                wait_s=min(config.inbound_wait_s, config.blob_timeout_s / 2),
            )
        )

    # ------------------------------------------------------------------ asyncio API

    async def start(self) -> None:
        """Start libp2p in its own thread and listen; returns once listening."""
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self._started = True
        await asyncio.to_thread(self._bridge.start, self._trio_main)
        log.info("p2p node %s listening on %s", self.peer_id, self._listen_addrs)

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
        return list(self._listen_addrs)

    @property
    def roster(self) -> Roster:
        return self._roster

    async def dial(self, multiaddr_str: str) -> str:
        """Connect to ``/.../p2p/<id>``; returns the peer id.

        Raises :class:`NotAMemberError` before dialling when the id is not on
        the roster, :class:`PeerUnreachableError` when the dial fails.
        """
        peer_id = _peer_id_of(multiaddr_str)
        if not self._roster.is_member(peer_id):
            raise NotAMemberError(f"{peer_id} is not on the roster of {self._roster.federation_id}")
        await self._call(self._dial_trio, peer_id, [multiaddr_str])
        return peer_id

    def connected_peers(self) -> set[str]:
        """Roster members with at least one open connection."""
        with self._lock:
            peers = {p for p, n in self._conn_counts.items() if n > 0}
        return {p for p in peers if self._roster.is_member(p)}

    def add_peer_addrs(self, peer_id: str, addrs: list[str] | tuple[str, ...]) -> None:
        """Remember dial addresses for a member (e.g. learned from a heartbeat)."""
        if not self._roster.is_member(peer_id) or peer_id == self.peer_id:
            return
        valid = [a for a in addrs if _is_dialable(a)][:8]
        if valid:
            with self._lock:
                self._known_addrs[peer_id] = valid

    async def send_blob(
        self, peer_id: str, kind: str, round: int, payload: bytes, *, timeout: float | None = None
    ) -> None:
        """Send ``payload`` to a member over a fresh stream and wait for its ack.

        Raises a :class:`BlobError` subclass (too large, timeout, rejected by
        the receiver, ...), :class:`NotAMemberError`,
        :class:`ProtocolNegotiationError` when the peer does not speak the blob
        protocol, or :class:`PeerUnreachableError` when no address of the peer answers.
        """
        if not self._roster.is_member(peer_id):
            raise NotAMemberError(f"{peer_id} is not on the roster of {self._roster.federation_id}")
        if len(payload) > self.config.max_blob_bytes:
            raise BlobTooLargeError(
                f"blob is {len(payload)} bytes, limit {self.config.max_blob_bytes}"
            )
        limit = self.config.blob_timeout_s if timeout is None else timeout
        await self._call(self._send_new_blob_trio, peer_id, kind, round, payload, limit)

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
        if not self._roster.is_member(peer_id):
            raise NotAMemberError(f"{peer_id} is not on the roster of {self._roster.federation_id}")
        if len(payload) > self.config.max_message_bytes:
            raise BlobTooLargeError(
                f"message is {len(payload)} bytes, limit {self.config.max_message_bytes}; "
                "use send_blob"
            )
        limit = self.config.blob_timeout_s if timeout is None else timeout
        await self._call(self._send_message_trio, peer_id, kind, round, payload, limit)

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish a small signed message (< 64 KiB) to ``topic``."""
        if len(payload) > MAX_GOSSIP_PAYLOAD:
            raise GossipRejectedError(
                f"gossip payload is {len(payload)} bytes, limit {MAX_GOSSIP_PAYLOAD}; use send_blob"
            )
        data = seal(self.identity, self._roster.federation_id, topic, payload)
        await self._call(self._publish_trio, topic, data)

    async def subscribe(self, topic: str) -> None:
        """Deliver verified messages on ``topic`` to ``on_gossip`` (idempotent)."""
        await self._call(self._subscribe_trio, topic)

    def set_roster(self, roster: Roster) -> None:
        """Swap the roster live; connections of removed members are closed."""
        if roster.federation_id != self._roster.federation_id:
            raise P2PError(
                f"roster is for federation {roster.federation_id!r}, "
                f"node runs {self._roster.federation_id!r}"
            )
        self._roster = roster
        if self._bridge.running and self._nursery is not None:
            nursery = self._nursery
            self._bridge.run_sync_soon(lambda: nursery.start_soon(self._drop_non_members))

    def stats(self) -> dict[str, Any]:
        """Counters since start: bytes/blobs sent and received, rejections by reason."""
        out = self._counters.snapshot()
        inbound = self._inbound
        out["inbound_blobs_in_flight"] = inbound.blobs
        out["inbound_bytes_in_flight"] = inbound.bytes
        out["inbound_waited"] = inbound.waited_total
        out["connected_peers"] = len(self.connected_peers())
        out["dht_records_used"] = self._dht.records_used if self._dht is not None else 0
        return out

    def latency_ms(self, peer_id: str) -> float | None:
        """Smoothed round-trip time of the last pings to ``peer_id``."""
        with self._lock:
            return self._latency.get(peer_id)

    async def __aenter__(self) -> P2PNode:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ helpers

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if not self._started or self._stopped or not self._bridge.running:
            raise NodeNotRunningError("p2p node is not running (call start() first)")
        return await self._bridge.call(fn, *args)

    def _count_reject(self, reason: str) -> None:
        self._counters.reject(reason)

    def _add_stat(self, key: str, value: int) -> None:
        self._counters.add(key, value)

    # ------------------------------------------------------------------ trio side

    async def _trio_main(self, nursery: trio.Nursery) -> None:
        await nursery.start(self._serve)

    async def _serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        # With an interface named, mDNS is ours (bound to it, started below);
        # without one, py-libp2p's own, which listens on every interface.
        bound_mdns = cfg.enable_mdns and bool(cfg.mdns_interface)
        host = build_host(
            self.identity, [cfg.listen], enable_mdns=cfg.enable_mdns and not bound_mdns
        )
        gossipsub = GossipSub(
            [PROTOCOL_ID_V11],
            degree=6,
            degree_low=4,
            degree_high=12,
            heartbeat_interval=1,
            max_messages_per_topic_per_second=cfg.gossip_max_msgs_per_s,
        )
        pubsub = Pubsub(host, gossipsub)
        self._host, self._pubsub = host, pubsub
        self._messages = MessageStreams(
            host,
            self.peer_id,
            lambda: self._roster,
            max_message_bytes=cfg.max_message_bytes,
            body_timeout_s=cfg.blob_timeout_s,
            deliver=self._hand_to_daemon,
            count_reject=self._count_reject,
            add_stat=self._add_stat,
        )
        mdns: InterfaceMdnsDiscovery | None = None
        if bound_mdns:
            assert cfg.mdns_interface is not None
            interface = cfg.mdns_interface
            # Zeroconf opens its sockets and starts its own thread: seconds, off trio.
            mdns = await trio.to_thread.run_sync(lambda: InterfaceMdnsDiscovery(host, interface))
        try:
            async with host.run([multiaddr.Multiaddr(cfg.listen)]):
                host.get_network().register_notifee(_Notifee(self))
                host.set_stream_handler(TProtocol(framing.BLOB_PROTOCOL), self._handle_blob_stream)
                host.set_stream_handler(TProtocol(PING_PROTOCOL), self._handle_ping_stream)
                host.set_stream_handler(TProtocol(MESSAGE_PROTOCOL), self._messages.handle)
                self._listen_addrs = [str(a) for a in host.get_addrs()]
                async with background_trio_service(pubsub), background_trio_service(gossipsub):
                    await pubsub.wait_until_ready()
                    async with trio.open_nursery() as inner:
                        self._nursery = inner
                        await self._subscribe_trio(_ANNOUNCE_TOPIC)
                        inner.start_soon(self._maintenance_loop)
                        if mdns is not None:
                            await trio.to_thread.run_sync(mdns.start)
                            inner.start_soon(mdns.cleanup_loop)
                        if cfg.enable_dht:
                            self._dht = DhtDiscovery(
                                host,
                                self.identity,
                                lambda: self._roster,
                                learn=self.add_peer_addrs,
                                reject=self._count_reject,
                                max_age_s=cfg.dht_record_max_age_s,
                            )
                            await inner.start(self._dht.run)
                            inner.start_soon(self._dht_loop, self._dht)
                        task_status.started()
                        await trio.sleep_forever()
        finally:
            if mdns is not None:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(mdns.stop)

    # connection events ---------------------------------------------------------

    def _on_connected(self, peer_id: str) -> None:
        with self._lock:
            self._conn_counts[peer_id] += 1
        if not self._roster.is_member(peer_id):
            log.warning("closing connection from %s: not on the roster", peer_id)
            self._count_reject("not_member")
            if self._nursery is not None:
                self._nursery.start_soon(self._close_peer, peer_id)
            return
        self._backoff.pop(peer_id, None)

    def _on_disconnected(self, peer_id: str) -> None:
        with self._lock:
            self._conn_counts[peer_id] -= 1
            if self._conn_counts[peer_id] <= 0:
                del self._conn_counts[peer_id]

    async def _close_peer(self, peer_id: str) -> None:
        assert self._host is not None
        try:
            with trio.move_on_after(5):
                await self._host.get_network().close_peer(ID.from_base58(peer_id))
        except Exception:
            log.exception("failed to close connection to %s", peer_id)

    async def _drop_non_members(self) -> None:
        assert self._host is not None
        for pid in list(self._host.get_connected_peers()):
            if not self._roster.is_member(str(pid)):
                log.info("roster changed: disconnecting %s", pid)
                await self._close_peer(str(pid))

    # dialling --------------------------------------------------------------------

    def _candidate_addrs(self, peer_id: str) -> list[str]:
        assert self._host is not None
        member = self._roster.member(peer_id)
        addrs: list[str] = list(member.addrs) if member else []
        with self._lock:
            addrs += self._known_addrs.get(peer_id, [])
        # The peerstore raises when it has never heard of the peer.
        with contextlib.suppress(Exception):
            addrs += [str(a) for a in self._host.get_peerstore().addrs(ID.from_base58(peer_id))]
        return [a for a in dict.fromkeys(addrs) if _is_dialable(a)]

    async def _dial_trio(self, peer_id: str, addrs: list[str]) -> None:
        assert self._host is not None
        maddrs = []
        for a in addrs:
            m = multiaddr.Multiaddr(a)
            if "p2p" in {p.name for p in m.protocols()}:
                m = m.decapsulate(multiaddr.Multiaddr(f"/p2p/{peer_id}"))
            maddrs.append(m)
        if not maddrs:
            raise PeerUnreachableError(f"no known address for {peer_id}")
        try:
            with trio.fail_after(_DIAL_TIMEOUT_S):
                await self._host.connect(PeerInfo(ID.from_base58(peer_id), maddrs))
        except trio.TooSlowError as exc:
            raise PeerUnreachableError(f"dialling {peer_id} timed out") from exc
        except Exception as exc:
            raise PeerUnreachableError(f"cannot dial {peer_id} at {addrs}: {exc}") from exc

    def _is_connected(self, peer_id: str) -> bool:
        with self._lock:
            return self._conn_counts.get(peer_id, 0) > 0

    async def _ensure_connected(self, peer_id: str) -> None:
        if not self._is_connected(peer_id):
            await self._dial_trio(peer_id, self._candidate_addrs(peer_id))

    async def _maintenance_loop(self) -> None:
        """Keep members connected, announce our addresses, measure latency."""
        next_announce = 0.0
        while True:
            now = trio.current_time()
            for addr in self.config.bootstrap:
                try:
                    pid = _peer_id_of(addr)
                except P2PError:
                    log.warning("bootstrap address %s has no /p2p/<id>; ignored", addr)
                    continue
                if self._roster.is_member(pid):
                    self.add_peer_addrs(pid, [addr])
            for member in self._roster.members:
                pid = member.peer_id
                if pid == self.peer_id or self._is_connected(pid) or pid in self._dialing:
                    continue
                next_try, _ = self._backoff.get(pid, (0.0, 0.0))
                if now >= next_try and self._candidate_addrs(pid):
                    self._dialing.add(pid)
                    assert self._nursery is not None
                    self._nursery.start_soon(self._redial, pid)
            if now >= next_announce:
                next_announce = now + self.config.announce_interval_s
                assert self._nursery is not None
                self._nursery.start_soon(self._announce_and_ping)
            await trio.sleep(self.config.maintenance_interval_s)

    async def _dht_loop(self, dht: DhtDiscovery) -> None:
        """Publish our signed record and look up members we are not connected to."""
        while True:
            await dht.add_members(self.connected_peers())
            await dht.publish([a for a in self._listen_addrs if _is_dialable(a)])
            # Members we cannot reach, and members we reach only through an
            # address nobody signed (libp2p's auto-connector dials whatever
            # Kademlia routing put into the peerstore): fetch their own record.
            with self._lock:
                signed = set(self._known_addrs)
            missing = [
                m.peer_id
                for m in self._roster.members
                if m.peer_id != self.peer_id
                and (not self._is_connected(m.peer_id) or (m.peer_id not in signed and not m.addrs))
            ]
            async with trio.open_nursery() as nursery:
                for pid in missing:
                    nursery.start_soon(dht.lookup, pid)
            await trio.sleep(self.config.dht_interval_s)

    async def _redial(self, peer_id: str) -> None:
        lo, hi = self.config.reconnect_backoff_s
        try:
            await self._dial_trio(peer_id, self._candidate_addrs(peer_id))
            self._backoff.pop(peer_id, None)
            log.info("connected to member %s (%s)", peer_id, self._roster.org_of(peer_id))
        except P2PError as exc:
            _, delay = self._backoff.get(peer_id, (0.0, 0.0))
            delay = min(hi, max(lo, delay * 2))
            self._backoff[peer_id] = (trio.current_time() + delay, delay)
            log.debug("redial of %s failed (%s); next try in %.1f s", peer_id, exc, delay)
        finally:
            self._dialing.discard(peer_id)

    async def _announce_and_ping(self) -> None:
        addrs = [a for a in self._listen_addrs if _is_dialable(a)]
        if addrs and self.config.announce_addrs:
            data = seal(
                self.identity,
                self._roster.federation_id,
                _ANNOUNCE_TOPIC,
                json.dumps({"addrs": addrs}).encode(),
            )
            try:
                await self._publish_trio(_ANNOUNCE_TOPIC, data, count=False)
            except Exception:
                log.debug("address announcement failed", exc_info=True)
        async with trio.open_nursery() as nursery:
            for pid in list(self.connected_peers()):
                nursery.start_soon(self._ping_and_track, pid)

    async def _ping_and_track(self, peer_id: str) -> None:
        """Measure latency; a member that misses two pings in a row is presumed
        gone (TCP alone may not notice a dead link for many minutes) and its
        connection is closed so the redial loop takes over."""
        try:
            with trio.fail_after(_PING_TIMEOUT_S):
                rtt = await self._ping(peer_id)
        except Exception as exc:
            misses = self._ping_misses.get(peer_id, 0) + 1
            self._ping_misses[peer_id] = misses
            if misses >= _PING_MISSES_BEFORE_CLOSE:
                log.warning("member %s missed %d pings (%s); closing", peer_id, misses, exc)
                self._ping_misses.pop(peer_id, None)
                await self._close_peer(peer_id)
            return
        self._ping_misses.pop(peer_id, None)
        with self._lock:
            old = self._latency.get(peer_id)
            self._latency[peer_id] = rtt if old is None else 0.7 * old + 0.3 * rtt

    async def _ping(self, peer_id: str) -> float:
        assert self._host is not None
        stream = await self._host.new_stream(ID.from_base58(peer_id), [TProtocol(PING_PROTOCOL)])
        try:
            token = b"p" * 32
            start = time.perf_counter()
            await stream.write(token)
            echoed = await framing.read_exactly(stream_reader(stream), 32)
            rtt_ms = (time.perf_counter() - start) * 1000.0
            if echoed != token:
                raise P2PError("bad ping echo")
            await stream.close()
            return rtt_ms
        except BaseException:
            await reset_stream(stream)
            raise

    async def _handle_ping_stream(self, stream: INetStream) -> None:
        try:
            with trio.fail_after(10):
                if not self._roster.is_member(str(stream.muxed_conn.peer_id)):
                    await reset_stream(stream)
                    return
                data = await framing.read_exactly(stream_reader(stream), 32)
                await stream.write(data)
                await stream.close()
        except Exception as exc:
            log.debug("ping stream failed: %s", exc)
            await reset_stream(stream)

    # gossip ------------------------------------------------------------------------

    def _topic(self, topic: str) -> str:
        return f"fedswarm/{self._roster.federation_id}/{topic}"

    async def _publish_trio(self, topic: str, data: bytes, count: bool = True) -> None:
        assert self._pubsub is not None
        await self._pubsub.publish(self._topic(topic), data)
        if count:
            self._add_stat("gossip_published", 1)

    async def _subscribe_trio(self, topic: str) -> None:
        assert self._pubsub is not None and self._nursery is not None
        if topic in self._subscribed:
            return
        self._subscribed.add(topic)
        full = self._topic(topic)
        self._pubsub.set_topic_validator(
            full, lambda _peer, msg: self._validate_gossip(topic, msg), False
        )
        subscription = await self._pubsub.subscribe(full)
        self._nursery.start_soon(self._read_topic, topic, subscription)

    def _open_member_envelope(self, topic: str, data: bytes) -> GossipEnvelope | None:
        """The envelope if it is valid for this federation and topic and signed by a
        member; otherwise None, with the rejection counted."""
        try:
            env = open_envelope(
                data,
                federation_id=self._roster.federation_id,
                topic=topic,
                max_age_s=self.config.gossip_max_age_s,
            )
        except GossipRejectedError as exc:
            log.warning("rejected gossip on %s: %s", topic, exc)
            self._count_reject("gossip_invalid")
            return None
        if not self._roster.is_member(env.sender):
            self._count_reject("gossip_not_member")
            return None
        return env

    def _validate_gossip(self, topic: str, msg: Any) -> bool:
        """GossipSub validator: invalid messages are neither delivered nor forwarded."""
        env = self._open_member_envelope(topic, msg.data)
        if env is None:
            return False
        try:
            originator = str(ID(msg.from_id))
        except Exception:
            originator = ""
        if originator != env.sender:
            self._count_reject("gossip_invalid")
            return False
        return True

    async def _read_topic(self, topic: str, subscription: Any) -> None:
        while True:
            msg = await subscription.get()
            # Checked again on delivery: the roster may have changed since validation.
            env = self._open_member_envelope(topic, msg.data)
            if env is None or env.sender == self.peer_id:
                continue
            key = hashlib.sha256(env.signature).digest()
            if key in self._seen:
                self._count_reject("gossip_replay")
                continue
            self._seen[key] = env.sent_at
            while len(self._seen) > _SEEN_CACHE:
                self._seen.popitem(last=False)
            if topic == _ANNOUNCE_TOPIC:
                self._learn_addrs(env.sender, env.payload)
                continue
            self._add_stat("gossip_received", 1)
            assert self._loop is not None
            asyncio.run_coroutine_threadsafe(
                self._deliver_gossip(topic, env.sender, env.payload), self._loop
            )

    def _learn_addrs(self, sender: str, payload: bytes) -> None:
        try:
            addrs = json.loads(payload)["addrs"]
            if isinstance(addrs, list):
                self.add_peer_addrs(sender, [a for a in addrs if isinstance(a, str)])
        except (ValueError, KeyError, TypeError):
            self._count_reject("gossip_invalid")

    async def _call_blob_handler(self, header: BlobHeader, data: bytes) -> None:
        await self._on_blob(header, data)

    async def _deliver_gossip(self, topic: str, sender: str, payload: bytes) -> None:
        try:
            await self._on_gossip(topic, sender, payload)
        except Exception:
            log.exception("gossip handler failed for topic %s from %s", topic, sender)

    # blobs: sending ------------------------------------------------------------------

    def _header_to(
        self, peer_id: str, kind: str, round: int, length: int, sha256: bytes
    ) -> BlobHeader:
        """The header this node signs for a blob or message to ``peer_id``."""
        return BlobHeader(
            federation_id=self._roster.federation_id,
            sender=self.peer_id,
            recipient=peer_id,
            kind=kind,
            round=round,
            length=length,
            sha256=sha256,
            sent_at=time.time(),
        )

    async def _send_new_blob_trio(
        self, peer_id: str, kind: str, round: int, payload: bytes, timeout: float
    ) -> None:
        async def header() -> BlobHeader:
            return self._header_to(peer_id, kind, round, len(payload), await _digest(payload))

        await self._transfer_trio(peer_id, f"{kind}/{round}", header, payload, timeout)

    async def _send_blob_trio(self, header: BlobHeader, payload: bytes, timeout: float) -> None:
        """Send a header built in advance (hostile-peer tests forge them this way)."""

        async def ready() -> BlobHeader:
            return header

        label = f"{header.kind}/{header.round}"
        await self._transfer_trio(header.recipient, label, ready, payload, timeout)

    async def _transfer_trio(
        self,
        peer_id: str,
        label: str,
        header: Callable[[], Awaitable[BlobHeader]],
        payload: bytes,
        timeout: float,
    ) -> None:
        try:
            with trio.fail_after(timeout):
                await self._ensure_connected(peer_id)
                await self._write_blob(peer_id, await header(), payload)
        except trio.TooSlowError as exc:
            raise BlobTimeoutError(
                f"blob {label} to {peer_id} not acknowledged in {timeout} s"
            ) from exc
        except P2PError:
            raise
        except Exception as exc:  # libp2p stream/muxer errors
            if "window update" in str(exc):
                raise BlobTimeoutError(f"{peer_id} stopped reading the blob: {exc}") from exc
            raise BlobRejectedError(f"stream failed: {type(exc).__name__}: {exc}") from exc
        self._add_stat("blobs_sent", 1)

    async def _write_blob(self, peer_id: str, header: BlobHeader, payload: bytes) -> None:
        """Open the blob's stream and send it: one write, then the accept, the rest, the ack."""
        assert self._host is not None
        frame = framing.encode_signed_header(header, self.identity)
        view = memoryview(payload)
        early = 0
        if len(payload) <= self.config.pipeline_max_blob_bytes:
            room = _FIRST_WRITE - len(_BLOB_PROPOSAL) - len(frame)
            early = min(len(payload), max(0, room))
        # Protocol proposal, header and early body in one write (never more
        # than the stream's initial window, so it cannot block); the receiver
        # negotiates and checks the header while these bytes are on their way.
        stream = await open_stream_with(
            self._host,
            ID.from_base58(peer_id),
            TProtocol(framing.BLOB_PROTOCOL),
            [frame, view[:early]],
        )
        try:
            self._add_stat("bytes_sent", early)
            read = stream_reader(stream)
            status, reason = await _read_reply_or_rejected(read)
            if status != framing.STATUS_OK:
                raise refusal_error(reason)
            for offset in range(early, len(payload), _CHUNK):
                chunk = view[offset : offset + _CHUNK].tobytes()
                await stream.write(chunk)
                self._add_stat("bytes_sent", len(chunk))
            # Half-close now: the FIN travels behind the body instead of after
            # the ack, and the receiver's reply still comes back on its own half.
            await stream.close()
            status, reason = await _read_reply_or_rejected(read)
            if status != framing.STATUS_OK:
                raise refusal_error(reason)
        except BaseException:
            with trio.CancelScope(shield=True):
                await reset_stream(stream)
            raise

    # messages ---------------------------------------------------------------------------

    async def _send_message_trio(
        self, peer_id: str, kind: str, round: int, payload: bytes, timeout: float
    ) -> None:
        assert self._messages is not None
        header = self._header_to(peer_id, kind, round, len(payload), _sha256(payload))
        frame = framing.encode_signed_header(header, self.identity) + payload
        try:
            with trio.fail_after(timeout):
                await self._ensure_connected(peer_id)
                await self._messages.send(peer_id, frame, len(payload))
        except trio.TooSlowError as exc:
            raise BlobTimeoutError(
                f"message {kind}/{round} to {peer_id} not written in {timeout} s"
            ) from exc
        except P2PError:
            raise
        except Exception as exc:  # libp2p stream/muxer errors while opening the stream
            raise BlobRejectedError(f"message stream failed: {type(exc).__name__}: {exc}") from exc

    async def _hand_to_daemon(self, header: BlobHeader, data: bytes) -> None:
        """Run the daemon's ``on_blob`` on its asyncio loop and wait for it (blobs and messages)."""
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(self._call_blob_handler(header, data), self._loop)
        await wait_asyncio_future(future)

    # blobs: receiving -------------------------------------------------------------------

    async def _handle_blob_stream(self, stream: INetStream) -> None:
        """Stream handler: never lets an exception escape (it would kill the host)."""
        remote = str(stream.muxed_conn.peer_id)
        try:
            with trio.fail_after(self.config.blob_timeout_s):
                await self._receive_blob(stream, remote)
            await stream.close()
        except _Refused as exc:
            log.warning("refused blob from %s: %s", remote, exc.reason)
            await close_stream_quietly(stream)
        except BlobTruncatedError as exc:
            log.warning("truncated blob from %s: %s", remote, exc)
            self._count_reject("truncated")
            await reset_stream(stream)
        except trio.TooSlowError:
            log.warning("blob from %s timed out", remote)
            self._count_reject("timeout")
            await reset_stream(stream)
        except Exception:
            log.exception("blob stream from %s failed", remote)
            self._count_reject("internal")
            await reset_stream(stream)

    async def _refuse(self, stream: INetStream, reason: str) -> _Refused:
        # Count before the sender can see the refusal, so stats() never lags it.
        self._count_reject(reason.split(":", 1)[0])
        try:
            await stream.write(framing.encode_reply(framing.STATUS_REFUSED, reason))
        except Exception:
            log.debug("could not deliver refusal %r", reason)
        return _Refused(reason)

    async def _receive_blob(self, stream: INetStream, remote: str) -> None:
        read = stream_reader(stream)
        try:
            body, signature = await framing.read_signed_header(read)
            header = framing.verify_header(body, signature)
        except BlobSignatureError as exc:
            raise await self._refuse(stream, f"{framing.REASON_BAD_SIGNATURE}: {exc}") from exc
        reason = header_refusal(
            header, remote, self._roster, self.peer_id, self.config.max_blob_bytes
        )
        if reason is not None:
            raise await self._refuse(stream, reason)
        try:
            slot = await self._inbound.acquire(remote, header.length)
        except BlobBusyError as exc:
            raise await self._refuse(stream, f"{framing.REASON_BUSY}: {exc.reason}") from exc
        try:
            await stream.write(framing.encode_reply(framing.STATUS_OK))
            await self._receive_body(stream, read, remote, header)
        finally:
            slot.release()

    async def _receive_body(
        self, stream: INetStream, read: framing.ReadFn, remote: str, header: BlobHeader
    ) -> None:
        # BytesIO grows in place and getvalue() hands over its buffer without a
        # copy, so the body exists once in memory (plus one chunk).
        buffer = io.BytesIO()
        digest = hashlib.sha256()
        got = 0
        while got < header.length:
            chunk = await read(min(_CHUNK, header.length - got))
            if not chunk:
                raise BlobTruncatedError(
                    f"stream from {remote} ended after {got} of {header.length} bytes"
                )
            buffer.write(chunk)
            digest.update(chunk)
            got += len(chunk)
            self._add_stat("bytes_received", len(chunk))
        if digest.digest() != header.sha256:
            raise await self._refuse(stream, f"{framing.REASON_CORRUPT}: sha256 mismatch")
        data = buffer.getvalue()
        del buffer
        try:
            await self._hand_to_daemon(header, data)
        except Exception as exc:
            log.exception(
                "blob handler failed for %s/%s from %s", header.kind, header.round, remote
            )
            raise await self._refuse(
                stream, f"{framing.REASON_HANDLER_ERROR}: {type(exc).__name__}"
            ) from exc
        del data  # the daemon holds it now; not this frame while the ack goes out
        self._add_stat("blobs_received", 1)
        await stream.write(framing.encode_reply(framing.STATUS_OK))


async def _digest(payload: bytes) -> bytes:
    """sha256 of a payload: inline when small, else in a worker thread.

    hashlib releases the GIL, so a large payload's hash (0.4 s for 200 MiB)
    does not hold the trio thread and every other stream with it. A payload of
    at most ``_INLINE_HASH_MAX_BYTES`` is hashed on the spot: the thread
    hand-off costs more than the hash. A cancelled sender waits for its hash
    to finish (under a second for 512 MiB) before it sees the cancellation.
    """
    if len(payload) <= _INLINE_HASH_MAX_BYTES:
        return _sha256(payload)
    return await trio.to_thread.run_sync(_sha256, payload)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class _Refused(Exception):
    """Internal: the receiver refused a blob and told the sender why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def _read_reply_or_rejected(read: framing.ReadFn) -> tuple[int, str]:
    try:
        return await framing.read_reply(read)
    except BlobTruncatedError as exc:
        raise BlobRejectedError("receiver closed the stream without a reply") from exc


def _peer_id_of(addr: str) -> str:
    try:
        value = multiaddr.Multiaddr(addr).value_for_protocol("p2p")
    except Exception as exc:
        raise P2PError(f"{addr!r} is not a multiaddr with /p2p/<peer id>: {exc}") from exc
    if not value:
        raise P2PError(f"{addr!r} has no /p2p/<peer id>")
    return str(value)


def _is_dialable(addr: str) -> bool:
    """Valid TCP multiaddr not bound to an unspecified address."""
    try:
        m = multiaddr.Multiaddr(addr)
        host = m.value_for_protocol("ip4") if "ip4" in addr else m.value_for_protocol("ip6")
        return bool(m.value_for_protocol("tcp")) and host not in ("0.0.0.0", "::")
    except Exception:
        return False
