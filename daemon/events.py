"""Live events for the dashboard: a tiny fan-out of dicts to bounded queues.

A slow or vanished browser must never slow the round loop, so each subscriber
gets a bounded queue and loses its oldest events first when it falls behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

QUEUE_SIZE = 256


class EventBus:
    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._queues.discard(queue)

    def publish(self, event_type: str, **fields: Any) -> None:
        event = {"type": event_type, "ts": time.time(), **fields}
        for queue in list(self._queues):
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(event)
