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

    @property
    def others(self) -> list[str]:
        """The group without ``me``, in peer-id order."""
        return [peer for peer in self.members if peer != self.me]

    def rejecter(self, kind: str) -> Callable[[str, str], None]:
        """``on_reject`` bound to one message kind, as the protocols below take it."""
        return lambda peer, why: self.on_reject(peer, kind, why)
