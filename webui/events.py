"""Live events to the browser as server-sent events (``GET /api/events``).

Why the extra buffer: the daemon pushes events into the queue it handed out from
``DaemonView.subscribe()``. A browser tab on a sleeping laptop stops reading; if
we read the daemon's queue only as fast as the socket drains, that queue grows
(or the daemon's ``put`` blocks). So a small pump task drains the daemon's queue
at once into a bounded per-client buffer that drops the *oldest* events when full;
the writer then tells the page to ``resync`` (re-read the JSON API), which is
always correct because every event is also reflected in the API's state.

Wire format, one event per message::

    id: 7
    data: {"type": "round_completed", "round": 3, ...}

plus a ``: keep-alive`` comment line every ``keepalive_s`` seconds so idle
connections are not cut, and ``data: {"type": "resync", "dropped": n}`` after
drops.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any, Final

from aiohttp import web

from .jsonsafe import dumps
from .view import DaemonView

Event = dict[str, Any]

KEEPALIVE_COMMENT: Final = b": keep-alive\n\n"
STREAM_PREAMBLE: Final = b": connected\nretry: 3000\n\n"


class ClientEventBuffer:
    """A bounded FIFO of events for one SSE client that drops the oldest when full."""

    def __init__(self, capacity: int) -> None:
        self._items: deque[Event] = deque(maxlen=capacity)
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0
        """Events discarded since the last ``take`` (reset by ``take``)."""

    @property
    def closed(self) -> bool:
        return self._closed

    def push(self, event: Event) -> None:
        """Append ``event``; if the buffer is full, the oldest event is discarded."""
        if self._items.maxlen is not None and len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(event)
        self._ready.set()

    def close(self) -> None:
        """Wake the writer so it can end the stream (server shutdown)."""
        self._closed = True
        self._ready.set()

    async def take(self, timeout_s: float) -> tuple[list[Event], int]:
        """Wait up to ``timeout_s`` for events; return them and how many were dropped."""
        if not self._items and not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout_s)
        self._ready.clear()
        events = list(self._items)
        self._items.clear()
        dropped, self.dropped = self.dropped, 0
        return events, dropped


def publish_drop_oldest(queue: asyncio.Queue[Event], event: Event) -> None:
    """Put ``event`` into a bounded subscriber ``queue`` without ever blocking.

    Meant for the daemon's side of ``DaemonView.subscribe()``: when a subscriber's
    queue is full, its oldest event is discarded to make room.
    """
    while True:
        try:
            queue.put_nowait(event)
            return
        except asyncio.QueueFull:
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()


def encode_event(event_id: int, event: Event) -> bytes:
    """One SSE message. JSON escapes newlines, so ``data`` is always a single line."""
    data = dumps(event)
    return f"id: {event_id}\ndata: {data}\n\n".encode()


async def _pump(source: asyncio.Queue[Event], buffer: ClientEventBuffer) -> None:
    """Move events from the daemon's queue into the client's buffer as they arrive."""
    while True:
        event = await source.get()
        if isinstance(event, dict):
            buffer.push(event)


class EventStreams:
    """The open SSE connections of one app, so shutdown can end them promptly."""

    def __init__(self) -> None:
        self._buffers: set[ClientEventBuffer] = set()

    def __len__(self) -> int:
        return len(self._buffers)

    def add(self, buffer: ClientEventBuffer) -> None:
        self._buffers.add(buffer)

    def discard(self, buffer: ClientEventBuffer) -> None:
        self._buffers.discard(buffer)

    def close_all(self) -> None:
        for buffer in list(self._buffers):
            buffer.close()


async def stream_events(
    request: web.Request,
    view: DaemonView,
    streams: EventStreams,
    keepalive_s: float,
    capacity: int,
) -> web.StreamResponse:
    """Serve one SSE connection until the client leaves or the server shuts down."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    queue = view.subscribe()
    buffer = ClientEventBuffer(capacity)
    streams.add(buffer)
    pump = asyncio.create_task(_pump(queue, buffer))
    event_id = 0
    try:
        await response.write(STREAM_PREAMBLE)
        while not buffer.closed:
            events, dropped = await buffer.take(keepalive_s)
            if dropped:
                event_id += 1
                await response.write(encode_event(event_id, {"type": "resync", "dropped": dropped}))
            if not events and not dropped and not buffer.closed:
                await response.write(KEEPALIVE_COMMENT)
            for event in events:
                event_id += 1
                await response.write(encode_event(event_id, event))
    except (ConnectionError, RuntimeError):
        # The client went away (reset, or the transport closed under us): nothing to do.
        pass
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        streams.discard(buffer)
        view.unsubscribe(queue)
    return response
