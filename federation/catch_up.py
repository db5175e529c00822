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

What is believed (issue #19: a hostile roster member must not take a member over).
A heartbeat's ``adapter_round`` and fingerprint are claims, and so is an ``adapter``
response. The quorum is always *more than half of the up roster members*, ourselves
counted in the denominator (though never as a holder): one hostile member, or any
minority, cannot make one, and claims above the federation's target (``[federation]
rounds``) or the wire bound count towards nothing. ``catch_up_plan`` decides:

* **adopt** a neighbour's adapter when a quorum advertise the same adapter round
  *and* fingerprint, ahead of our own round. The response must come from one of
  those holders, name exactly that round, and hash to that fingerprint *before*
  anything is loaded (``check_pulled``). A holder that finished another round while we
  asked answers with that newer adapter: it is adopted once a quorum advertise it too
  (``quorum_for``), and dropped without blame otherwise;
* otherwise **skip ahead** to the highest round a quorum have completed (each
  advertises ``adapter_round`` at least that), keeping our own adapter, when that is
  ahead of our own last complete round. With several groups per round no single adapter
  has a quorum (each group holds its own average), yet the round number is still
  confirmed; our stale adapter joins the next group average like any other;
* otherwise do nothing and train on.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
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
    def adapter_round(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...


@dataclass(frozen=True)
class PulledAdapter:
    """A neighbour's adapter as of its last complete round."""

    peer_id: str
    round: int
    vector: np.ndarray
    mass: float


class CatchUpRefusedError(ValueError):
    """A pulled adapter is not the one the quorum advertises; nothing was loaded."""


@dataclass(frozen=True)
class AdoptAdapter:
    """An adapter a quorum of up members hold: its round, its fingerprint, who holds it."""

    round: int
    fingerprint: str
    holders: tuple[str, ...]  # sorted; every one advertised (round, fingerprint)
    up_members: int  # the quorum's denominator: up roster members, ourselves included


@dataclass(frozen=True)
class SkipAhead:
    """A round a quorum of up members have completed; we keep our own adapter."""

    round: int
    confirmed_by: int  # how many up members advertise at least ``round``
    up_members: int


CatchUpPlan = AdoptAdapter | SkipAhead


def quorum_size(up_members: int) -> int:
    """More than half of ``up_members``: two disjoint sets of peers cannot both reach it."""
    return up_members // 2 + 1


def catch_up_plan(
    view: Mapping[str, PeerRound],
    is_member: Callable[[str], bool],
    me: str,
    own_round: int,
    max_round: int,
) -> CatchUpPlan | None:
    """What to catch up to, or None: the rule is in the module docstring.

    ``own_round`` is our last complete round; ``max_round`` the federation's target (or
    the wire bound when it has none). A heartbeat advertising a round above
    ``max_round``, none, or no fingerprint vouches for nothing, but its sender still
    counts in the denominator: an up member that does not vouch for a round is one
    that does not vouch for it.
    """
    up = _up_others(view, is_member, me)
    denominator = len(up) + 1
    need = quorum_size(denominator)
    holders: dict[tuple[int, str], list[str]] = defaultdict(list)
    completed: Counter[int] = Counter()
    for pid in up:
        advert = view[pid]
        if not 0 <= advert.adapter_round <= max_round:
            continue
        completed[advert.adapter_round] += 1
        if advert.fingerprint:
            holders[(advert.adapter_round, advert.fingerprint)].append(pid)
    adoptable = [(round, fp, peers) for (round, fp), peers in holders.items()
                 if len(peers) >= need and round > own_round]
    if adoptable:
        round, fingerprint, peers = max(adoptable)
        return AdoptAdapter(round, fingerprint, tuple(peers), denominator)
    # the highest round r with at least ``need`` members advertising a round >= r
    at_least = 0
    for round in sorted(completed, reverse=True):
        at_least += completed[round]
        if at_least >= need:
            if round > own_round:
                return SkipAhead(round, at_least, denominator)
            break
    return None


def _up_others(view: Mapping[str, PeerRound], is_member: Callable[[str], bool],
               me: str) -> list[str]:
    return sorted(pid for pid, v in view.items() if v.up and pid != me and is_member(pid))


def quorum_for(
    view: Mapping[str, PeerRound],
    is_member: Callable[[str], bool],
    me: str,
    round: int,
    fingerprint: str,
) -> AdoptAdapter | None:
    """The quorum of up members that advertise exactly ``(round, fingerprint)``, or None.

    A holder answers a pull with its newest adapter. In a federation whose rounds are
    short it often finished another round between the plan and the answer; the answer
    may be adopted once a quorum advertise *that* adapter (the member who pulled waits
    a few heartbeats for them) -- never on the holder's word alone.
    """
    up = _up_others(view, is_member, me)
    holders = tuple(pid for pid in up if view[pid].adapter_round == round
                    and view[pid].fingerprint == fingerprint)
    if not fingerprint or len(holders) < quorum_size(len(up) + 1):
        return None
    return AdoptAdapter(round, fingerprint, holders, len(up) + 1)


def check_pulled(pulled: PulledAdapter, target: AdoptAdapter, fingerprint: str) -> None:
    """Refuse a response that is not exactly the quorum's adapter (``CatchUpRefusedError``).

    ``fingerprint`` is what ``pulled.vector`` hashes to: the caller computes it once, off
    the event loop (hashing a real adapter takes a while), and uses it for
    ``quorum_for`` as well.
    """
    if pulled.peer_id not in target.holders:
        raise CatchUpRefusedError(f"{pulled.peer_id} is not one of the quorum's holders")
    if pulled.round != target.round:
        raise CatchUpRefusedError(
            f"response is for round {pulled.round}, the quorum advertises {target.round}"
        )
    if fingerprint != target.fingerprint:
        raise CatchUpRefusedError(
            f"adapter hashes to {fingerprint}, the quorum advertises {target.fingerprint}"
        )


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
        self._last_request: dict[str, float] = {}  # requests we served, by requester
        self._asked: dict[str, float] = {}  # requests we sent, by holder
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

    def least_recently_asked(self, peers: tuple[str, ...]) -> str:
        """One of ``peers`` we asked longest ago (or never), at random among equals.

        A holder refuses a second request within ``MIN_REQUEST_INTERVAL_S`` and the
        refused request times out: asking the same holder again at once cost a member
        catching up in a fast federation 30 s.
        """
        oldest = min(self._asked.get(p, -1e9) for p in peers)
        return random.choice([p for p in peers if self._asked.get(p, -1e9) == oldest])

    async def pull(self, peer: str, own_round: int, expected_size: int,
                   timeout: float) -> PulledAdapter:
        """Ask ``peer`` for its adapter; raises ``TimeoutError`` or ``ValueError``.

        Waits first, when ``peer`` was asked less than ``MIN_REQUEST_INTERVAL_S`` ago:
        it would refuse the request.
        """
        since = time.monotonic() - self._asked.get(peer, -1e9)
        if since < MIN_REQUEST_INTERVAL_S:
            await asyncio.sleep(MIN_REQUEST_INTERVAL_S - since)
        self._asked[peer] = time.monotonic()
        future: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._waiting[peer] = future
        try:
            await self._link.send_blob(peer, REQUEST_KIND, own_round, b"")
            round_done, payload = await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(peer, None)
        vector, mass = decode_update(payload, expected_size)
        return PulledAdapter(peer, round_done, vector.copy(), mass)
