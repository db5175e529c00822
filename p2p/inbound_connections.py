"""Give an inbound connection's slot back when that connection closes.

py-libp2p 0.8.1's swarm admits an inbound TCP connection by taking one token of a
``trio.CapacityLimiter`` of ``max_connections - min_connections`` (250) and gives the
token back when its handler returns. After a successful upgrade that handler waits for
the *whole swarm* to stop (``await self.manager.wait_finished()``), not for the
connection, because trio closes a listener's socket as soon as the handler returns. So
every inbound connection a node ever accepted keeps its token, and its handler task,
until the node stops: after 250 inbound connections in a process's life -- reconnects
after a network blip, members restarting, a busy hour of redials -- the swarm closes every
new inbound connection before the security handshake. The dialler sees "failed to
negotiate the secure protocol", for good, while outbound dials from the full node still
work: the pairs of 32 daemons on one box that never reconnected (docs/reliability.md).

:class:`InboundConnections` wraps the swarm's own inbound handler and runs it until the
connection's raw stream is closed (every way a connection ends closes it: Yamux closes
its secured connection on a local close and on a remote end or error, a failed upgrade
closes it too), then cancels what is left of it, which is only that wait. The library's
``finally`` then gives the token back, and the task ends. Everything else the handler
does (the connection gate, the upgrade, ``add_conn``) is the library's code, unchanged.

The cap still holds, now on connections that are open; reaching it is a refusal the node
counts (``inbound_cap``), where the library only logs it at debug.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
from libp2p.io.abc import ReadWriteCloser
from multiaddr import Multiaddr

from .refusals import RefusedHook, report_refusal

#: The reason an inbound connection refused at the swarm's cap is counted under.
INBOUND_CAP = "inbound_cap"

#: How long the library's handler may go on after its stream closed before it is
#: cancelled: a failed upgrade closes the stream and then returns by itself, with its
#: clean-up done; a connection that was up is left waiting for the swarm to stop.
CLOSE_GRACE_S = 1.0

InboundHandler = Callable[[ReadWriteCloser, Multiaddr], Awaitable[None]]


class ClosureTrackingStream(ReadWriteCloser):
    """A raw stream that says when it has been closed, and otherwise is the stream."""

    def __init__(self, inner: ReadWriteCloser) -> None:
        self.inner = inner
        self.closed = trio.Event()

    async def read(self, n: int | None = None) -> bytes:
        return await self.inner.read(n)

    async def write(self, data: bytes) -> None:
        await self.inner.write(data)

    async def close(self) -> None:
        try:
            await self.inner.close()
        finally:
            self.closed.set()

    def get_remote_address(self) -> tuple[str, int] | None:
        return self.inner.get_remote_address()


class InboundConnections:
    """The swarm's inbound handler, ended when its connection closes (module docstring)."""

    def __init__(self, swarm_handler: InboundHandler, limiter: trio.CapacityLimiter,
                 on_refused: RefusedHook | None = None) -> None:
        self._swarm_handler = swarm_handler
        self._limiter = limiter
        self._on_refused = on_refused
        self.open = 0
        """Inbound connections whose handler is running (handshaking or up)."""

    async def handle(self, stream: ReadWriteCloser, listen_addr: Multiaddr) -> None:
        """Run the library's handler for ``stream`` until the stream is closed."""
        if self._limiter.available_tokens < 1:
            self._refuse(stream)
        tracked = ClosureTrackingStream(stream)
        self.open += 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._run_then_stop, tracked, listen_addr, nursery)
                await tracked.closed.wait()
                await trio.sleep(CLOSE_GRACE_S)  # cut short if the handler returns first
                nursery.cancel_scope.cancel()
        finally:
            self.open -= 1

    async def _run_then_stop(self, tracked: ClosureTrackingStream, listen_addr: Multiaddr,
                             nursery: trio.Nursery) -> None:
        await self._swarm_handler(tracked, listen_addr)
        nursery.cancel_scope.cancel()

    def _refuse(self, stream: ReadWriteCloser) -> None:
        """Count a connection the swarm is about to close at its cap (it closes it)."""
        if self._on_refused is None:
            return
        remote = stream.get_remote_address()
        where = f"{remote[0]}:{remote[1]}" if remote else "an unknown address"
        detail = (f"inbound connection from {where}: {self.open} inbound connections are "
                  f"open, the swarm's cap is {int(self._limiter.total_tokens)}")
        report_refusal(self._on_refused, INBOUND_CAP, None, detail)


def release_inbound_slots_on_close(swarm: object, on_refused: RefusedHook | None) -> None:
    """Install :class:`InboundConnections` on a py-libp2p ``Swarm`` before it listens.

    The swarm's listeners call ``self._handle_inbound_connection`` when a connection
    arrives, so an attribute set on the instance takes the method's place.
    """
    handler = InboundConnections(swarm._handle_inbound_connection,  # type: ignore[attr-defined]
                                 swarm._inbound_limiter,  # type: ignore[attr-defined]
                                 on_refused)
    swarm._handle_inbound_connection = handler.handle  # type: ignore[attr-defined]
    swarm.fedswarm_inbound = handler  # type: ignore[attr-defined]
