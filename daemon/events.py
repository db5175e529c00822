"""Live events for the dashboard: a tiny fan-out of dicts to bounded queues.

A slow or vanished browser must never slow the round loop, so each subscriber
gets a bounded queue and loses its oldest events first when it falls behind.

The bus also remembers the last :data:`HISTORY_SIZE` events (``recent()``), so a
dashboard opened after activity shows what happened instead of an empty "Recent
events" list until the next event. Per-step ``train_step`` events are left out of
that history: the Training tab reads every step from the database, and 20 steps a
round would push everything else out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any

QUEUE_SIZE = 256
HISTORY_SIZE = 50
_NOT_IN_HISTORY = frozenset({"train_step"})


class EventBus:
    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()
        self._history: deque[dict[str, Any]] = deque(maxlen=HISTORY_SIZE)

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._queues.discard(queue)

    def publish(self, event_type: str, **fields: Any) -> None:
        event = {"type": event_type, "ts": time.time(), **fields}
        if event_type not in _NOT_IN_HISTORY:
            self._history.append(event)
        for queue in list(self._queues):
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(event)

    def recent(self, limit: int = HISTORY_SIZE) -> list[dict[str, Any]]:
        """The last ``limit`` events (no per-step ones), oldest first."""
        items = list(self._history)
        return [dict(e) for e in items[-limit:]] if limit > 0 else []
