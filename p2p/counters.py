"""The node's traffic counters and rejections by reason, for ``P2PNode.stats()``.

Every part of the node counts on the trio thread while the daemon reads the
counters from asyncio (the ``/api/traffic`` view, metrics), so one lock guards
them; it is held for a dict update only, never across an await.

Besides the totals, the last :data:`RECENT_REJECTIONS` refusals are kept with their
time, peer and detail, so an operator sees *who* was refused (a non-member's peer
id, a dialler's address) without a database write per refused connection: a
flood of outsiders costs memory bounded here, not disk.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any

#: Refusals remembered with their details (the totals count all of them).
RECENT_REJECTIONS = 100

# The counters stats() always reports, zero until something happens.
COUNTER_NAMES = (
    "bytes_sent",
    "bytes_received",
    "blobs_sent",
    "blobs_received",
    "messages_sent",
    "messages_received",
    "message_streams_opened",
    # send_to_connected (heartbeats): members skipped while a write to them was still
    # going, and writes that failed; neither is retried, the next beat supersedes it
    "messages_skipped_busy",
    "messages_not_sent",
    "gossip_published",
    "gossip_received",
    # liveness and links: what an idle member costs (bench.idle_mesh)
    "pings_sent",
    "ping_streams_opened",
    "dead_links_closed",
    "dials",
)


class NodeCounters:
    """Named running totals plus a count of rejections per reason, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self._rejected: Counter[str] = Counter()
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_REJECTIONS)

    def add(self, key: str, value: int) -> None:
        """Add ``value`` to the counter ``key`` (one of :data:`COUNTER_NAMES`)."""
        with self._lock:
            self._totals[key] += value

    def reject(self, reason: str, peer_id: str | None = None, detail: str = "") -> None:
        """Count one refused connection, blob, message or gossip under ``reason``.

        ``peer_id`` (when the refusal knows one) and ``detail`` (an address, what
        was wrong) are kept among the recent refusals.
        """
        entry = {"ts": time.time(), "peer_id": peer_id, "reason": reason, "detail": detail[:300]}
        with self._lock:
            self._rejected[reason] += 1
            self._recent.append(entry)

    def recent_rejections(self) -> list[dict[str, Any]]:
        """The latest refusals, newest first: ``{ts, peer_id, reason, detail}``."""
        with self._lock:
            return [dict(e) for e in reversed(self._recent)]

    def snapshot(self) -> dict[str, Any]:
        """A copy of every counter, with ``rejected`` as a plain dict of reasons."""
        with self._lock:
            out: dict[str, Any] = dict(self._totals)
            out["rejected"] = dict(self._rejected)
        return out
