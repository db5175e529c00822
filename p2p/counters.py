"""The node's traffic counters and rejections by reason, for ``P2PNode.stats()``.

Every part of the node counts on the trio thread while the daemon reads the
counters from asyncio (the ``/api/traffic`` view, metrics), so one lock guards
them; it is held for a dict update only, never across an await.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

# The counters stats() always reports, zero until something happens.
COUNTER_NAMES = (
    "bytes_sent",
    "bytes_received",
    "blobs_sent",
    "blobs_received",
    "messages_sent",
    "messages_received",
    "message_streams_opened",
    "gossip_published",
    "gossip_received",
)


class NodeCounters:
    """Named running totals plus a count of rejections per reason, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self._rejected: Counter[str] = Counter()

    def add(self, key: str, value: int) -> None:
        """Add ``value`` to the counter ``key`` (one of :data:`COUNTER_NAMES`)."""
        with self._lock:
            self._totals[key] += value

    def reject(self, reason: str) -> None:
        """Count one refused connection, blob, message or gossip under ``reason``."""
        with self._lock:
            self._rejected[reason] += 1

    def snapshot(self) -> dict[str, Any]:
        """A copy of every counter, with ``rejected`` as a plain dict of reasons."""
        with self._lock:
            out: dict[str, Any] = dict(self._totals)
            out["rejected"] = dict(self._rejected)
        return out
