"""Ping (``/fedswarm/ping/1.0.0``): latency to each member, and dead-link detection.

TCP alone may not notice a dead link for many minutes, and a connection that looks
open stops the reconnect loop from re-dialling. So every connected member is pinged
every ``ping_interval_s`` (unless its messages vouch for the link, below): the round
trip feeds ``P2PNode.latency_ms()`` (smoothed),
and a member whose pings all failed for :data:`DEAD_LINK_S` (at least
:data:`PING_MISSES_BEFORE_CLOSE` in a row) has its connection closed so the reconnect
loop (:mod:`.connections`) takes over.

Why a time and not just two misses: on a loaded machine a ping misses its 5 s because
the *process* is busy (a training step holding the GIL, an HE job), not the link. Two
misses used to close the connection; both ends then redialled, handshook, re-subscribed
and re-grafted gossip — more work on the busy machine, more slow pings. 16 daemons on 2
cores closed a member every few seconds this way and never formed groups. A dead link
still shows as silence, so it is still closed, in ``DEAD_LINK_S`` instead of ~10 s.

The wire format is libp2p's ping: 32 random bytes out, the same 32 bytes back, any
number of times on one stream. Each member keeps **one ping stream per member** and
reuses it every interval. A fresh stream per ping cost a Yamux stream and a
multistream-select negotiation each time — for 32 members 992 of them every 5 s, which
kept a 2-core box busy enough that pings missed and healthy links were closed
(docs/reliability.md, "32 real daemons"; ``python -m bench.idle_mesh``). A reused stream
that fails (its connection dropped, the other end reset it) is replaced once within the
same ping; a ping that timed out drops its stream, since its echo may still arrive.

Pings to one member never overlap (a stream carries one ping at a time: a ping still
waiting when the next interval comes is not doubled). The answering side serves one
stream until it ends or idles for :data:`PING_STREAM_IDLE_S`; a member may hold at most
:data:`MAX_PING_STREAMS_PER_PEER` ping streams to us at once.

A message that arrives from a member on its message stream proves the link as well as
a ping's echo (:meth:`Pinger.heard`): a member heard from within
:data:`HEARD_COUNTS_FOR_S` is not pinged, except once per :data:`LATENCY_REFRESH_S` to
keep its latency current. Daemons send each other heartbeats on those streams every
few seconds, so between daemons pings all but stop; for 32 members that was about 400
messages a second across the mesh, half its idle CPU (docs/reliability.md).

Only the trio thread runs this module's coroutines; latencies are read from asyncio,
so a lock guards them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable

import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from . import framing
from .context import NodeContext
from .errors import P2PError
from .streams import close_stream_quietly, reset_stream, stream_reader

# The logger of P2PNode before it was split into modules: log filters keep matching.
log = logging.getLogger("fedswarm.p2p.node")

PING_PROTOCOL = "/fedswarm/ping/1.0.0"
_PING_BYTES = 32
_PING_TIMEOUT_S = 5.0
PING_MISSES_BEFORE_CLOSE = 3
DEAD_LINK_S = 30.0
"""How long every ping to a member must have failed before its connection is closed."""
PING_STREAM_IDLE_S = 120.0
"""How long an inbound ping stream may wait for its next ping before it is closed (a
member pings every ``ping_interval_s``; its next ping opens a new stream)."""
HEARD_COUNTS_FOR_S = 10.0
"""A message from a member this recent stands in for a ping: its link is alive."""
LATENCY_REFRESH_S = 60.0
"""A member heard from is still pinged this often, for its latency."""
MAX_PING_STREAMS_PER_PEER = 2
"""Inbound ping streams one member may hold open at once: its current one and the one
replacing it; more are reset, so a member cannot tie up handlers with idle streams."""


class Pinger:
    """Pings members, keeps their smoothed round-trip times, answers their pings."""

    def __init__(self, ctx: NodeContext, *, close_peer: Callable[[str], Awaitable[None]]) -> None:
        self._ctx = ctx
        self._close_peer = close_peer
        self._lock = threading.Lock()  # guards _latency, read from asyncio
        self._latency: dict[str, float] = {}
        self._misses: dict[str, int] = {}  # trio thread only
        self._failing_since: dict[str, float] = {}  # trio thread only: first miss in a row
        self._streams: dict[str, INetStream] = {}  # trio thread only: our stream per member
        self._in_flight: set[str] = set()  # trio thread only: members being pinged now
        self._inbound: Counter[str] = Counter()  # trio thread only: their streams to us
        self._heard: dict[str, float] = {}  # trio thread only: last message from a member
        self._pinged: dict[str, float] = {}  # trio thread only: last answered ping

    def latency_ms(self, peer_id: str) -> float | None:
        """Smoothed round-trip time of the last pings to ``peer_id``."""
        with self._lock:
            return self._latency.get(peer_id)

    def heard(self, peer_id: str) -> None:
        """A message from ``peer_id`` arrived on its connection: the link is alive."""
        self._heard[peer_id] = trio.current_time()
        self._misses.pop(peer_id, None)
        self._failing_since.pop(peer_id, None)

    def needs_ping(self, peer_id: str, now: float) -> bool:
        """False while a recent message vouches for the link and the latency is fresh."""
        heard = self._heard.get(peer_id)
        if heard is None or now - heard > HEARD_COUNTS_FOR_S:
            return True
        pinged = self._pinged.get(peer_id)
        return pinged is None or now - pinged >= LATENCY_REFRESH_S

    async def ping_all(self, peers: Iterable[str]) -> None:
        """Ping every peer not vouched for by a recent message, at once; returns when
        all answered or missed."""
        now = trio.current_time()
        async with trio.open_nursery() as nursery:
            for pid in list(peers):
                if self.needs_ping(pid, now):
                    nursery.start_soon(self._ping_and_track, pid)

    async def _ping_and_track(self, peer_id: str) -> None:
        """Measure latency; a member whose pings have all failed for ``DEAD_LINK_S`` is
        presumed gone and its connection is closed so the redial loop takes over."""
        if peer_id in self._in_flight:
            return  # the last ping is still waiting on this member's one stream
        self._in_flight.add(peer_id)
        try:
            await self._ping_once_and_track(peer_id)
        finally:
            self._in_flight.discard(peer_id)

    async def _ping_once_and_track(self, peer_id: str) -> None:
        try:
            with trio.fail_after(_PING_TIMEOUT_S):
                rtt = await self._ping(peer_id)
        except Exception as exc:
            now = trio.current_time()
            if self.record_miss(peer_id, now):
                silent_s = now - self._failing_since.pop(peer_id, now)
                misses = self._misses.pop(peer_id, 0)
                log.warning(
                    "member %s missed %d pings in a row over %.0f s (%s); closing",
                    peer_id,
                    misses,
                    silent_s,
                    exc,
                )
                self._ctx.counters.add("dead_links_closed", 1)
                await self._drop_stream(peer_id)
                await self._close_peer(peer_id)
            return
        self._misses.pop(peer_id, None)
        self._failing_since.pop(peer_id, None)
        self._pinged[peer_id] = trio.current_time()
        with self._lock:
            old = self._latency.get(peer_id)
            self._latency[peer_id] = rtt if old is None else 0.7 * old + 0.3 * rtt

    def record_miss(self, peer_id: str, now: float) -> bool:
        """Count one missed ping; True when the member's link is to be closed."""
        misses = self._misses.get(peer_id, 0) + 1
        self._misses[peer_id] = misses
        since = self._failing_since.setdefault(peer_id, now)
        return misses >= PING_MISSES_BEFORE_CLOSE and now - since >= DEAD_LINK_S

    async def _ping(self, peer_id: str) -> float:
        """One round trip on this member's ping stream; a failed reused stream is
        replaced once (the member may have restarted, or reset an idle stream)."""
        for _attempt in range(2):
            stream = self._streams.get(peer_id)
            fresh = stream is None
            if stream is None:
                host = self._ctx.handles.require_host()
                stream = await host.new_stream(ID.from_base58(peer_id),
                                               [TProtocol(PING_PROTOCOL)])
                self._streams[peer_id] = stream
                self._ctx.counters.add("ping_streams_opened", 1)
            try:
                return await self._round_trip(stream)
            except Exception:
                await self._drop_stream(peer_id)
                if fresh:
                    raise
            except BaseException:  # cancelled or timed out: its echo may still come
                await self._drop_stream(peer_id)
                raise
        raise P2PError(f"ping to {peer_id} failed on a fresh stream")  # not reached

    async def _round_trip(self, stream: INetStream) -> float:
        token = os.urandom(_PING_BYTES)
        self._ctx.counters.add("pings_sent", 1)
        start = time.perf_counter()
        await stream.write(token)
        echoed = await framing.read_exactly(stream_reader(stream), _PING_BYTES)
        rtt_ms = (time.perf_counter() - start) * 1000.0
        if echoed != token:
            raise P2PError("bad ping echo")
        return rtt_ms

    async def _drop_stream(self, peer_id: str) -> None:
        stream = self._streams.pop(peer_id, None)
        if stream is not None:
            with trio.CancelScope(shield=True):
                await reset_stream(stream)

    async def handle_stream(self, stream: INetStream) -> None:
        """Stream handler: echo a member's pings until its stream ends; never raises (it
        would kill the host)."""
        remote = str(stream.muxed_conn.peer_id)
        if (not self._ctx.roster.is_member(remote)
                or self._inbound[remote] >= MAX_PING_STREAMS_PER_PEER):
            await reset_stream(stream)
            return
        self._inbound[remote] += 1
        try:
            read = stream_reader(stream)
            while True:
                with trio.move_on_after(PING_STREAM_IDLE_S) as idle:
                    first = await read(_PING_BYTES)
                if idle.cancelled_caught or not first:
                    break  # idle, or the member closed it
                with trio.fail_after(_PING_TIMEOUT_S):
                    rest = await framing.read_exactly(read, _PING_BYTES - len(first))
                await stream.write(first + rest)
            await close_stream_quietly(stream)
        except Exception as exc:
            log.debug("ping stream from %s failed: %s", remote, exc)
            await reset_stream(stream)
        finally:
            self._inbound[remote] -= 1
            if self._inbound[remote] <= 0:
                del self._inbound[remote]
