"""Admission control for inbound blobs: how many, and how many bytes, at once.

A receiver holds a whole blob in memory from its first body byte until the
daemon's handler returns. Without a bound, members sending at the same time
(or one member opening many streams) make a node hold N x ``max_blob_bytes``.
Every blob is admitted from its signed header, *before* the accept reply and
so before the receiver reads a single body byte (a blob over 16 MiB has not
sent one; a smaller one may have parked its first Yamux window of body in the
stream, see :mod:`.blob_sender`; that write never waits on us). When there is no room it
waits (up to ``wait_s``) for a blob in flight to finish, then is refused with
``busy``; the sender raises :class:`~.errors.BlobBusyError`. Senders already
wait for the accept reply, so a short wait costs them nothing but time.

Fair share. One peer may not take the whole byte budget, or a single member
could declare blobs that fill ``max_bytes`` and keep every other peer's blob out
as busy. A peer's bytes in flight, the new blob included, may be at most half of
what the *other* peers leave free::

    2 * (own + length) + others <= max_bytes

So a peer alone may hold half the budget; while it does, any other peer may
still take a quarter (and a third peer an eighth, and so on: the room left
never reaches zero, it halves per greedy peer). With the defaults (2 GiB
budget, 512 MiB ``max_blob_bytes``) a blob of any allowed size from an idle peer
is admitted even while another peer holds all it may. A blob arriving when
nothing at all is in flight is still admitted whatever its size. Waiting is
fair too: one peer may have at most ``max_blobs_per_peer`` blobs waiting, so it
cannot fill the waiting room either.

Lives on the p2p (trio) thread only; the counters are plain ints so the
asyncio side may read them for ``stats()``.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import trio

from .errors import BlobBusyError

log = logging.getLogger("fedswarm.p2p.inbound")


@dataclass(frozen=True)
class InboundLimits:
    """Bounds on blobs being received at once (body read + handler running).

    The defaults never make a normal round wait: a group of 8 sends each
    member at most 7 x 2 blobs at once, far below 32 blobs, 4 per peer, and
    2 GiB. One peer may hold at most half of the bytes the other peers leave
    free (see the module docstring). A blob larger than that is still
    admitted when nothing else is in flight (``max_blob_bytes`` is what caps
    a single blob).
    """

    max_bytes: int = 2 * 2**30
    max_blobs: int = 32
    max_blobs_per_peer: int = 4
    wait_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_blobs <= 0 or self.max_blobs_per_peer <= 0:
            raise ValueError("inbound limits must be positive")
        if self.wait_s < 0:
            raise ValueError("inbound wait_s must not be negative")


class InboundSlot:
    """One admitted blob; :meth:`release` (idempotent) gives its room back."""

    def __init__(self, limiter: InboundLimiter, peer: str, length: int) -> None:
        self._limiter = limiter
        self.peer = peer
        self.length = length
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limiter._release(self)


class InboundLimiter:
    """Counts blobs and bytes in flight, overall and per peer."""

    def __init__(self, limits: InboundLimits) -> None:
        self.limits = limits
        self.blobs = 0
        self.bytes = 0
        self.waiting = 0
        self.waited_total = 0
        self.refused_total = 0
        self._per_peer: Counter[str] = Counter()
        self._peer_bytes: Counter[str] = Counter()
        self._waiting_per_peer: Counter[str] = Counter()
        self._changed = trio.Event()

    def peer_bytes(self, peer: str) -> int:
        """Bytes of ``peer``'s blobs in flight now."""
        return self._peer_bytes.get(peer, 0)

    def _fits(self, peer: str, length: int) -> bool:
        limits = self.limits
        if self._per_peer[peer] >= limits.max_blobs_per_peer or self.blobs >= limits.max_blobs:
            return False
        if self.blobs == 0:
            return True  # a lone blob, whatever its size (max_blob_bytes caps it)
        own = self._peer_bytes[peer]
        others = self.bytes - own
        return 2 * (own + length) + others <= limits.max_bytes

    async def acquire(self, peer: str, length: int) -> InboundSlot:
        """Admit one blob of ``length`` bytes from ``peer``, waiting for room.

        Raises :class:`BlobBusyError` when there is still no room after
        ``wait_s``, or at once when as many blobs already wait as may be in
        flight (so waiting streams are bounded too).
        """
        if not self._fits(peer, length):
            if self.waiting >= self.limits.max_blobs:
                self.refused_total += 1
                raise BlobBusyError(self._describe(peer, length, "too many blobs already waiting"))
            if self._waiting_per_peer[peer] >= self.limits.max_blobs_per_peer:
                self.refused_total += 1
                raise BlobBusyError(
                    self._describe(peer, length, "too many blobs from this peer already waiting")
                )
            self.waiting += 1
            self.waited_total += 1
            self._waiting_per_peer[peer] += 1
            log.info("inbound blob waits for room: %s", self._describe(peer, length, "full"))
            try:
                with trio.move_on_after(self.limits.wait_s):
                    while not self._fits(peer, length):
                        await self._changed.wait()
            finally:
                self.waiting -= 1
                self._waiting_per_peer[peer] -= 1
                if self._waiting_per_peer[peer] <= 0:
                    del self._waiting_per_peer[peer]
            if not self._fits(peer, length):
                self.refused_total += 1
                raise BlobBusyError(
                    self._describe(peer, length, f"no room after {self.limits.wait_s:g} s")
                )
        self.blobs += 1
        self.bytes += length
        self._per_peer[peer] += 1
        self._peer_bytes[peer] += length
        return InboundSlot(self, peer, length)

    def _release(self, slot: InboundSlot) -> None:
        self.blobs -= 1
        self.bytes -= slot.length
        self._per_peer[slot.peer] -= 1
        self._peer_bytes[slot.peer] -= slot.length
        if self._per_peer[slot.peer] <= 0:
            del self._per_peer[slot.peer]
            del self._peer_bytes[slot.peer]
        self._changed.set()
        self._changed = trio.Event()

    def _describe(self, peer: str, length: int, why: str) -> str:
        limits = self.limits
        return (
            f"{why}: {length} bytes from {peer[-8:]}; in flight {self.blobs} blobs "
            f"({self._per_peer.get(peer, 0)} from this peer), {self.bytes} bytes "
            f"({self._peer_bytes.get(peer, 0)} from this peer); limits "
            f"{limits.max_blobs} blobs, {limits.max_blobs_per_peer} per peer, "
            f"{limits.max_bytes} bytes, one peer at most half of what the others leave free"
        )
