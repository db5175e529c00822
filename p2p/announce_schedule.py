"""When a node announces its addresses on gossip: a burst, then a slow refresh.

Every member used to announce every ``announce_interval_s`` (5 s) for as long as it ran.
Each announcement is a GossipSub message every other member receives, parses and checks
(py-libp2p verifies a signed peer record on every RPC as well), so the cost grew as N²:
32 idle members on 2 cores spent 1.7 of the cores on it and, overloaded, missed pings
and closed healthy links (``python -m bench.idle_mesh``; docs/reliability.md).

Addresses rarely change, and the members that need one are those that just started or
joined: they learn the others' addresses from the roster, a bootstrap peer or the DHT,
and the others learn *theirs* from their announcements, then dial them. So a node
announces :attr:`AnnounceSchedule.burst` times, ``interval_s`` apart, when it starts and
whenever its dialable addresses change, and otherwise once every ``refresh_s`` — enough
for a member that missed the burst (announcements older than ``gossip_max_age_s`` are
refused, so the refresh must stay below it).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AnnounceSchedule:
    """Decides, on each maintenance pass, whether to announce now."""

    interval_s: float
    burst: int
    refresh_s: float
    _addrs: tuple[str, ...] | None = field(default=None, init=False)
    _left: int = field(default=0, init=False)
    _next: float = field(default=0.0, init=False)

    def due(self, now: float, addrs: list[str]) -> bool:
        """True when an announcement of ``addrs`` should go out at ``now``."""
        if tuple(addrs) != self._addrs:  # first pass, or the addresses changed
            self._addrs = tuple(addrs)
            self._left = self.burst
            self._next = now
        if now < self._next:
            return False
        if self._left > 0:
            self._left -= 1
            self._next = now + self.interval_s
        else:
            self._next = now + self.refresh_s
        return True
