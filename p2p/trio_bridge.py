"""Run trio code (py-libp2p) in one dedicated thread, callable from asyncio.

py-libp2p is trio-based and not thread-safe; the daemon is asyncio. All
libp2p objects live in a single thread running its own trio loop. asyncio code
submits coroutine functions with :meth:`TrioThread.call`; the result comes
back through a ``concurrent.futures.Future`` wrapped for asyncio. Cancelling
the asyncio side cancels the trio task's scope, so a timed-out ``send_blob``
really stops writing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import trio

from .errors import NodeNotRunningError

log = logging.getLogger("fedswarm.p2p.trio_bridge")

T = TypeVar("T")


class _Job:
    """One submitted call: its future and (once started) its cancel scope."""

    def __init__(self) -> None:
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.scope: trio.CancelScope | None = None
        self.cancel_requested = False


class TrioThread:
    """A thread that owns a trio event loop and a root nursery."""

    def __init__(self, name: str = "fedswarm-p2p") -> None:
        self._name = name
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop_event: trio.Event | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None

    def start(self, main: Callable[[trio.Nursery], Awaitable[None]]) -> None:
        """Start the thread; ``main(nursery)`` runs first and must return once
        its setup is done (it may start background tasks in the nursery).
        Blocks the calling thread until ``main`` returned (or failed)."""
        self._thread = threading.Thread(
            target=self._run, args=(main,), name=self._name, daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            self._thread.join(timeout=5)
            raise self._start_error

    def _run(self, main: Callable[[trio.Nursery], Awaitable[None]]) -> None:
        try:
            trio.run(self._root, main)
        except BaseException as exc:  # the thread must never die silently
            if not self._ready.is_set():
                self._start_error = exc
            else:
                log.exception("trio thread ended with an error")
        finally:
            self._token = None
            self._ready.set()

    async def _root(self, main: Callable[[trio.Nursery], Awaitable[None]]) -> None:
        self._stop_event = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._token = trio.lowlevel.current_trio_token()
            try:
                await main(nursery)
            except BaseException as exc:
                self._start_error = exc
                nursery.cancel_scope.cancel()
                self._ready.set()
                return
            self._ready.set()
            await self._stop_event.wait()
            nursery.cancel_scope.cancel()

    @property
    def running(self) -> bool:
        return self._token is not None and self._thread is not None and self._thread.is_alive()

    def run_sync_soon(self, fn: Callable[[], None]) -> None:
        """Schedule a plain function on the trio thread (fire and forget)."""
        token = self._token
        if token is None:
            raise NodeNotRunningError("p2p thread is not running")
        try:
            token.run_sync_soon(fn)
        except trio.RunFinishedError as exc:
            raise NodeNotRunningError("p2p thread has stopped") from exc

    async def call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Run ``await fn(*args)`` on the trio thread; await its result from asyncio."""
        job = _Job()

        def start() -> None:
            if self._nursery is None:
                _settle(job.future, error=NodeNotRunningError("p2p thread is not running"))
                return
            self._nursery.start_soon(self._run_job, job, fn, args)

        self.run_sync_soon(start)
        try:
            return await asyncio.wrap_future(job.future)  # type: ignore[no-any-return]
        except asyncio.CancelledError:

            def cancel() -> None:
                job.cancel_requested = True
                if job.scope is not None:
                    job.scope.cancel()

            with contextlib.suppress(NodeNotRunningError):
                self.run_sync_soon(cancel)
            raise

    async def _run_job(
        self, job: _Job, fn: Callable[..., Coroutine[Any, Any, Any]], args: tuple[Any, ...]
    ) -> None:
        if not job.future.set_running_or_notify_cancel():
            return  # asyncio gave up before the job started
        try:
            with trio.CancelScope() as scope:
                job.scope = scope
                if job.cancel_requested:
                    scope.cancel()
                try:
                    result = await fn(*args)
                except Exception as exc:
                    _settle(job.future, error=exc)
                else:
                    _settle(job.future, result=result)
        finally:
            if not job.future.done():
                _settle(job.future, error=NodeNotRunningError("p2p call was cancelled"))

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel everything on the trio thread and join it (bounded)."""
        token = self._token
        if token is not None and self._stop_event is not None:
            event = self._stop_event
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(event.set)
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            if self._thread.is_alive():
                log.warning("p2p thread did not stop within %.1f s", timeout)


def _settle(
    future: concurrent.futures.Future[Any],
    *,
    result: Any = None,
    error: BaseException | None = None,
) -> None:
    """Resolve a future unless asyncio already cancelled it."""
    if future.done():
        return
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass


async def wait_asyncio_future(future: concurrent.futures.Future[T]) -> T:
    """From the trio thread, wait for a future resolved by the asyncio loop.

    Cancelling the trio side cancels the future (and so the asyncio task
    behind ``run_coroutine_threadsafe``).
    """
    done = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def wake(_: concurrent.futures.Future[T]) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(done.set)

    future.add_done_callback(wake)
    try:
        await done.wait()
    except trio.Cancelled:
        future.cancel()
        raise
    return future.result()
