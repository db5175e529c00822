"""Catching up with the federation: pull the current adapter from a neighbour.

A peer that restarts after a crash, joins mid-training, or was partitioned away
is rounds behind. Training from its stale adapter and waiting for groups that
have moved on would waste everyone's time, so it asks an up-to-date neighbour
for its adapter (the result of that neighbour's last complete round), loads it,
and resumes at the federation's current round.

What is revealed: the neighbour's adapter after its last group average, which
every member of that group already holds and which the whole federation
converges to anyway. No individual update is ever sent.

Requests are rate-limited per requester; only one pull is in flight at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .averaging.plain import decode_update, encode_update
from .link import ADAPTER_KIND, ADAPTER_REQUEST_KIND, Link, send_before

REQUEST_KIND = ADAPTER_REQUEST_KIND
RESPONSE_KIND = ADAPTER_KIND
MIN_REQUEST_INTERVAL_S = 5.0


class PeerRound(Protocol):
    """What catch-up reads of a peer's heartbeat (``p2p.membership.PeerView`` fits)."""

    @property
    def up(self) -> bool: ...

    @property
    def round(self) -> int: ...


@dataclass(frozen=True)
class PulledAdapter:
    """A neighbour's adapter as of its last complete round."""

    peer_id: str
    round: int
    vector: np.ndarray
    mass: float


def most_advanced_peer(
    view: Mapping[str, PeerRound], is_member: Callable[[str], bool], own_round: int
) -> tuple[str, int] | None:
    """The up member furthest ahead, if it is more than one round ahead of us.

    A peer's heartbeat carries the round it is working on; a peer working on
    ``own_round + 1`` is where we are about to be, so only a larger gap counts.
    """
    candidates = [
        (v.round, pid) for pid, v in view.items() if v.up and is_member(pid) and v.round >= 0
    ]
    if not candidates:
        return None
    best_round, best_peer = max(candidates)
    if best_round > own_round + 1:
        return best_peer, best_round
    return None


class AdapterExchange:
    """Serves our adapter to peers that ask, and pulls one when we are behind."""

    def __init__(
        self,
        link: Link,
        current: Callable[[], tuple[int, np.ndarray, float] | None],
    ) -> None:
        """``current()`` returns (last complete round, adapter vector, mass), or None."""
        self._link = link
        self._current = current
        self._last_request: dict[str, float] = {}
        self._waiting: dict[str, asyncio.Future[tuple[int, bytes]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def on_request(self, sender: str) -> str | None:
        """Handle an adapter request; returns a rejection reason, or None if served."""
        now = time.monotonic()
        if now - self._last_request.get(sender, -1e9) < MIN_REQUEST_INTERVAL_S:
            return "adapter requests too frequent"
        self._last_request[sender] = now
        snapshot = self._current()
        if snapshot is None:
            return None  # nothing complete to share yet; the requester times out
        round_done, vector, mass = snapshot
        task = asyncio.create_task(self._respond(sender, round_done, vector, mass))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return None

    async def _respond(self, peer: str, round_done: int, vector: np.ndarray, mass: float) -> None:
        await send_before(
            self._link, peer, RESPONSE_KIND, round_done, encode_update(vector, mass), None
        )

    def on_response(self, sender: str, round: int, payload: bytes) -> str | None:
        """Handle an adapter response; returns a rejection reason if it was not asked for."""
        waiter = self._waiting.get(sender)
        if waiter is None or waiter.done():
            return "adapter sent without a request"
        waiter.set_result((round, payload))
        return None

    async def pull(self, peer: str, own_round: int, expected_size: int,
                   timeout: float) -> PulledAdapter:
        """Ask ``peer`` for its adapter; raises ``TimeoutError`` or ``ValueError``."""
        future: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._waiting[peer] = future
        try:
            await self._link.send_blob(peer, REQUEST_KIND, own_round, b"")
            round_done, payload = await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(peer, None)
        vector, mass = decode_update(payload, expected_size)
        return PulledAdapter(peer, round_done, vector.copy(), mass)
