"""What one round of one member knows: ``RoundContext``, ``Phase`` and the group floor.

A round runner (``daemon/round_runner.py``) builds a ``RoundContext`` once the group is
formed and hands it to the federation mode's exchange (``modes/``); every protocol
below reads the same fields instead of a dozen keyword arguments.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from .link import Link
from .mailbox import Mailbox

MIN_GROUP_SIZE = 3
"""Smallest group that may combine: in a group of two the average reveals the other's update.

Group planning never forms a smaller group, and every protocol refuses a result that
covers fewer members than this, whoever dropped out."""


def contributor_floor(planned_size: int) -> int:
    """Fewest members of a planned group whose inputs may be summed and revealed.

    A hostile leader can leave planned members out of the group it finalises, and a
    hostile aggregator can list uploads as dropped; with two colluders left beside one
    victim, the sum gives the victim's update away (issue #19). Requiring more than
    half of the planned group plus one, ``ceil(g/2) + 1``, means that while fewer than
    half of a planned group collude, every sum that is revealed holds at least two
    honest updates: leaving members out can shrink a group, never isolate one member.
    The plan is each member's own, which no single member controls (``groups.plan``).
    """
    return max(MIN_GROUP_SIZE, (planned_size + 1) // 2 + 1)


class Phase(enum.StrEnum):
    """What a member is doing now: its heartbeat, the dashboard and sd_notify show it."""

    STARTING = "starting"
    LOADING = "loading"
    WAITING_FOR_PEERS = "waiting_for_peers"
    CATCHING_UP = "catching_up"
    TRAINING = "training"
    GROUPING = "grouping"
    AGGREGATING = "aggregating"
    APPLYING = "applying"
    CHECKPOINTING = "checkpointing"
    DONE = "done"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True)
class RoundContext:
    """One member's view of one round, after its group formed.

    ``deadline`` is a ``time.monotonic()`` value by which the group's exchange must be
    over; members silent by then are left out. ``on_reject(peer, kind, why)`` records a
    peer message that was refused (the round goes on without it).
    """

    me: str
    round: int
    members: tuple[str, ...]  # the group, sorted, ``me`` included
    link: Link
    mailbox: Mailbox
    deadline: float
    on_reject: Callable[[str, str, str], None]
    min_contributors: int = MIN_GROUP_SIZE
    """Fewest members whose inputs this member lets a revealed sum hold
    (``contributor_floor`` of its planned group); secure aggregation enforces it."""
    moved_on: Callable[[str], bool] | None = None
    """Whether a member has left this round, by its signed heartbeats (a later round, or
    none within the down time): it sends nothing more for this round, so waits on it end
    early. None: never assumed."""

    @property
    def others(self) -> list[str]:
        """The group without ``me``, in peer-id order."""
        return [peer for peer in self.members if peer != self.me]

    def rejecter(self, kind: str) -> Callable[[str, str], None]:
        """``on_reject`` bound to one message kind, as the protocols below take it."""
        return lambda peer, why: self.on_reject(peer, kind, why)
