"""Connections to roster members: who is connected, where to dial, when to retry.

A dial costs about 250 ms (TCP, Noise, Yamux, identify), so the node keeps a
connection to every member open between rounds and re-dials a lost one with
exponential backoff instead of dialling per blob. Any connection whose peer id is
not on the roster is closed as soon as the Noise handshake names it, and a roster
change closes the connections of members it removed.

Dial addresses come from the roster, from ``bootstrap``, from what members announce
(gossip, heartbeats, DHT records; see :meth:`Connections.add_peer_addrs`) and from
libp2p's peerstore. Connection counts and learned addresses are read from asyncio
(``connected_peers()``, ``stats()``), so a lock guards them; everything else here
runs on the trio thread only.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections import Counter

import multiaddr
import trio
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from .context import NodeContext
from .errors import P2PError, PeerUnreachableError

# The logger of P2PNode before it was split into modules: log filters keep matching.
log = logging.getLogger("fedswarm.p2p.node")

_DIAL_TIMEOUT_S = 10.0

SIMULTANEOUS_DIAL_GRACE_S = 3.0
"""How long the member with the higher peer id lets a lost connection be redialled by
the other side before dialling itself.

When a connection ends, both ends notice within a maintenance pass and used to redial
each other at once, opening two connections in opposite directions for one that was lost: twice
the handshakes on a machine that is often busy already. The lower id dials at once; the
higher id dials only if no connection arrived within this grace (the other side may be
down, or unable to reach us). 16 bare nodes on 2 cores at load ~29, same run, two-miss
ping rule in both: 533 redials in 70 s with this rule, 895 without."""


class Connections:
    """Connection bookkeeping, dialling and reconnect backoff for one node."""

    def __init__(self, ctx: NodeContext) -> None:
        self._ctx = ctx
        self._lock = threading.Lock()  # guards the two dicts read from asyncio
        self._conn_counts: Counter[str] = Counter()
        self.known_addrs: dict[str, list[str]] = {}
        # trio-thread-only state
        self._backoff: dict[str, tuple[float, float]] = {}  # peer -> (next_try, delay)
        self._dialing: set[str] = set()
        self._down_since: dict[str, float] = {}  # peer -> when a pass first saw it unconnected

    # read from asyncio ---------------------------------------------------------------

    def connected_peers(self) -> set[str]:
        """Roster members with at least one open connection."""
        with self._lock:
            peers = {p for p, n in self._conn_counts.items() if n > 0}
        roster = self._ctx.roster
        return {p for p in peers if roster.is_member(p)}

    def is_connected(self, peer_id: str) -> bool:
        with self._lock:
            return self._conn_counts.get(peer_id, 0) > 0

    def add_peer_addrs(self, peer_id: str, addrs: list[str] | tuple[str, ...]) -> None:
        """Remember dial addresses for a member (e.g. learned from a heartbeat)."""
        if not self._ctx.roster.is_member(peer_id) or peer_id == self._ctx.me:
            return
        valid = [a for a in addrs if is_dialable(a)][:8]
        if valid:
            with self._lock:
                self.known_addrs[peer_id] = valid

    def peers_with_known_addrs(self) -> set[str]:
        """Members whose addresses we learned from something they signed."""
        with self._lock:
            return set(self.known_addrs)

    # connection events (trio thread, via ConnectionNotifee) --------------------------

    def on_connected(self, peer_id: str) -> None:
        with self._lock:
            self._conn_counts[peer_id] += 1
        if not self._ctx.roster.is_member(peer_id):
            log.warning("closing connection from %s: not on the roster", peer_id)
            self._ctx.counters.reject(
                "not_member", peer_id, "connection from a peer id not on the roster"
            )
            if self._ctx.handles.nursery is not None:
                self._ctx.handles.nursery.start_soon(self.close_peer, peer_id)
            return
        self._backoff.pop(peer_id, None)

    def on_disconnected(self, peer_id: str) -> None:
        with self._lock:
            self._conn_counts[peer_id] -= 1
            if self._conn_counts[peer_id] <= 0:
                del self._conn_counts[peer_id]

    def reconcile(self) -> None:
        """Set every peer's count to the open connections the swarm holds (trio thread).

        libp2p reports a closed connection only at the very end of its clean-up, after
        resetting streams and a sleep; a clean-up cancelled part-way (our own 5 s limit
        in :meth:`close_peer` on a loaded machine) never reports it. The count then stays
        above zero for a connection that no longer exists: the member looks connected,
        is never re-dialled, and its pings fail with "no known addresses" for good —
        32 daemons on a 2-core box lost every member this way. The swarm's own table is
        the truth; the events only keep the count fresh between two passes.
        """
        network = self._ctx.handles.require_host().get_network()
        self.forget_closed(network.get_connections())
        live: Counter[str] = Counter()
        for conn in network.get_connections():
            if not getattr(conn, "is_closed", False):
                live[str(conn.muxed_conn.peer_id)] += 1
        with self._lock:
            ghosts = [p for p, n in self._conn_counts.items() if n > 0 and live[p] == 0]
            self._conn_counts = Counter({p: n for p, n in live.items() if n > 0})
        # debug: the report also lags by design (libp2p sleeps 0.1 s before sending it),
        # so a pass can land in that gap on an ordinary disconnect
        for peer_id in ghosts:
            if self._ctx.roster.is_member(peer_id):
                log.debug(
                    "connection to member %s (%s) ended unreported; re-dialling",
                    peer_id,
                    self._ctx.roster.org_of(peer_id),
                )

    def forget_closed(self, conns: list[INetConn]) -> int:
        """Take closed connections out of the swarm's table (trio thread); returns how many.

        ``SwarmConn.close`` marks a connection closed first and removes it from the
        swarm's table only at the end of its clean-up; a clean-up cancelled part-way (our
        5 s limit in :meth:`close_peer` on a loaded machine) leaves it there for good.
        ``host.connect`` then sees an entry for the peer and returns without dialling,
        so the member could never be reached again. Its muxed connection is closed again
        in the background.
        """
        network = self._ctx.handles.require_host().get_network()
        remove = getattr(network, "remove_conn", None)
        if remove is None:
            return 0
        forgotten = 0
        for conn in conns:
            if not getattr(conn, "is_closed", False):
                continue
            remove(conn)
            forgotten += 1
            log.debug(
                "forgot a closed connection to %s its clean-up left behind", conn.muxed_conn.peer_id
            )
            nursery = self._ctx.handles.nursery
            if nursery is not None:
                nursery.start_soon(_close_quietly, conn)
        return forgotten

    async def close_peer(self, peer_id: str) -> None:
        """Close every connection to ``peer_id``; logs, never raises."""
        host = self._ctx.handles.require_host()
        try:
            with trio.move_on_after(5):
                await host.get_network().close_peer(ID.from_base58(peer_id))
        except Exception:
            log.exception("failed to close connection to %s", peer_id)

    async def drop_non_members(self) -> None:
        """After a roster change: close the connections of peers no longer on it."""
        host = self._ctx.handles.require_host()
        for pid in list(host.get_connected_peers()):
            if not self._ctx.roster.is_member(str(pid)):
                log.info("roster changed: disconnecting %s", pid)
                await self.close_peer(str(pid))

    # dialling (trio thread) ----------------------------------------------------------

    def candidate_addrs(self, peer_id: str) -> list[str]:
        """Every dialable address we know for ``peer_id``, roster's first, no repeats."""
        host = self._ctx.handles.require_host()
        member = self._ctx.roster.member(peer_id)
        addrs: list[str] = list(member.addrs) if member else []
        with self._lock:
            addrs += self.known_addrs.get(peer_id, [])
        # The peerstore raises when it has never heard of the peer.
        with contextlib.suppress(Exception):
            addrs += [str(a) for a in host.get_peerstore().addrs(ID.from_base58(peer_id))]
        return [a for a in dict.fromkeys(addrs) if is_dialable(a)]

    async def dial(self, peer_id: str, addrs: list[str]) -> None:
        """Connect to ``peer_id`` at one of ``addrs``, or raise :class:`PeerUnreachableError`."""
        host = self._ctx.handles.require_host()
        maddrs = []
        for a in addrs:
            m = multiaddr.Multiaddr(a)
            if "p2p" in {p.name for p in m.protocols()}:
                m = m.decapsulate(multiaddr.Multiaddr(f"/p2p/{peer_id}"))
            maddrs.append(m)
        if not maddrs:
            raise PeerUnreachableError(f"no known address for {peer_id}")
        # host.connect trusts any table entry for the peer, a closed one too
        network = host.get_network()
        self.forget_closed(network.get_connections(ID.from_base58(peer_id)))
        forget_failed_dial(network, peer_id)
        self._ctx.counters.add("dials", 1)
        try:
            with trio.fail_after(_DIAL_TIMEOUT_S):
                await host.connect(PeerInfo(ID.from_base58(peer_id), maddrs))
        except trio.TooSlowError as exc:
            raise PeerUnreachableError(f"dialling {peer_id} timed out") from exc
        except Exception as exc:
            raise PeerUnreachableError(f"cannot dial {peer_id} at {addrs}: {exc}") from exc

    async def ensure_connected(self, peer_id: str) -> None:
        """Dial ``peer_id`` unless a connection is already open (blobs, messages)."""
        if not self.is_connected(peer_id):
            await self.dial(peer_id, self.candidate_addrs(peer_id))

    # reconnecting (trio thread) ------------------------------------------------------

    def reconnect_members(self, now: float) -> None:
        """One maintenance pass: learn bootstrap addresses, start due re-dials.

        A member is re-dialled when it is not connected, not being dialled, its
        backoff has passed, we know an address for it and, if its peer id is lower than
        ours, it had :data:`SIMULTANEOUS_DIAL_GRACE_S` to dial us first; each re-dial
        runs as its own task so one slow member does not hold up the others.
        """
        for addr in self._ctx.config.bootstrap:
            try:
                pid = peer_id_of(addr)
            except P2PError:
                log.warning("bootstrap address %s has no /p2p/<id>; ignored", addr)
                continue
            if self._ctx.roster.is_member(pid):
                self.add_peer_addrs(pid, [addr])
        for member in self._ctx.roster.members:
            pid = member.peer_id
            if pid == self._ctx.me:
                continue
            if self.is_connected(pid):
                self._down_since.pop(pid, None)
                continue
            down_since = self._down_since.setdefault(pid, now)
            if pid in self._dialing or not self.dials_now(pid, now - down_since):
                continue
            next_try, _ = self._backoff.get(pid, (0.0, 0.0))
            if now >= next_try and self.candidate_addrs(pid):
                self._dialing.add(pid)
                self._ctx.handles.require_nursery().start_soon(self._redial, pid)

    def dials_now(self, peer_id: str, down_for_s: float) -> bool:
        """Whether we redial ``peer_id``, unconnected for ``down_for_s``, in this pass.

        The lower peer id dials at once and the higher one after
        :data:`SIMULTANEOUS_DIAL_GRACE_S`, so the two ends of a lost connection do not
        open two at the same moment (see there).
        """
        return self._ctx.me < peer_id or down_for_s >= SIMULTANEOUS_DIAL_GRACE_S

    async def _redial(self, peer_id: str) -> None:
        lo, hi = self._ctx.config.reconnect_backoff_s
        try:
            await self.dial(peer_id, self.candidate_addrs(peer_id))
            self._backoff.pop(peer_id, None)
            log.info("connected to member %s (%s)", peer_id, self._ctx.roster.org_of(peer_id))
        except P2PError as exc:
            _, delay = self._backoff.get(peer_id, (0.0, 0.0))
            delay = min(hi, max(lo, delay * 2))
            self._backoff[peer_id] = (trio.current_time() + delay, delay)
            log.debug("redial of %s failed (%s); next try in %.1f s", peer_id, exc, delay)
        finally:
            self._dialing.discard(peer_id)


class ConnectionNotifee(INotifee):
    """Connection events from libp2p (called on the trio thread), for :class:`Connections`."""

    def __init__(self, connections: Connections) -> None:
        self._connections = connections

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._connections.on_connected(str(conn.muxed_conn.peer_id))

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._connections.on_disconnected(str(conn.muxed_conn.peer_id))

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass


def forget_failed_dial(network: INetwork, peer_id: str) -> None:
    """Let the next dial to ``peer_id`` through py-libp2p's negative cache.

    py-libp2p 0.8.1 refuses every dial to a peer for 60 s once all its addresses failed
    once. A member started a second before another dialled it, failed, and then could
    not send it anything for a minute: a group invitation sent in that minute was lost
    and the round waited out its whole window (seen in a 3-daemon test). fedswarm
    decides itself when a member is worth dialling (:meth:`Connections.dials_now`, the
    redial loop's back-off), so a dial it asks for is made.
    """
    cache = getattr(network, "_negative_peer_cache", None)
    if cache is not None:
        with contextlib.suppress(Exception):
            cache.evict(peer_id)


async def _close_quietly(conn: INetConn) -> None:
    """Finish closing a connection whose clean-up was cut short; never raises."""
    with trio.move_on_after(5), contextlib.suppress(Exception):
        await conn.muxed_conn.close()


def peer_id_of(addr: str) -> str:
    """The peer id in ``/.../p2p/<id>``; :class:`P2PError` when there is none."""
    try:
        value = multiaddr.Multiaddr(addr).value_for_protocol("p2p")
    except Exception as exc:
        raise P2PError(f"{addr!r} is not a multiaddr with /p2p/<peer id>: {exc}") from exc
    if not value:
        raise P2PError(f"{addr!r} has no /p2p/<peer id>")
    return str(value)


MAX_ADDR_CHARS = 512
"""No dialable multiaddr is longer (a DNS name is at most 253 characters); a longer
string from the wire is refused without being parsed or remembered."""


def is_dialable(addr: str) -> bool:
    """Valid TCP multiaddr not bound to an unspecified address.

    Remembered per string: py-multiaddr parses a string in about 0.1 ms of pure Python,
    and the maintenance pass checks our own listen addresses every second and every
    member's candidates on each redial, so parsing was a fifth of an idle node's CPU
    (two nodes on loopback, sampled; docs/performance.md). The answer depends on the
    string alone, and the cache is bounded, as are the strings it holds.
    """
    if len(addr) > MAX_ADDR_CHARS:
        return False
    return _is_dialable(addr)


@functools.lru_cache(maxsize=1024)
def _is_dialable(addr: str) -> bool:
    try:
        m = multiaddr.Multiaddr(addr)
        host = m.value_for_protocol("ip4") if "ip4" in addr else m.value_for_protocol("ip6")
        return bool(m.value_for_protocol("tcp")) and host not in ("0.0.0.0", "::")
    except Exception:
        return False
