"""The package's transport between daemons: requests and answers as blobs.

``distribution.fetch_package`` takes any function from request bytes to answer bytes;
``PackageClient.request`` is that function over a ``Link``: it sends one
``offsite-package-request`` blob to the model owner and waits for its
``offsite-package`` answer (one request in flight at a time: the fetcher is sequential).
On the owner, ``PackageService.on_request`` answers from ``PackageServer`` in a task,
so the network's receive path never waits on a send. Anything a peer gets wrong (an
answer nobody asked for, from someone not the owner, a request for a file outside the
package) is a rejection reason for the daemon to log, never an exception.
"""

from __future__ import annotations

import asyncio
import logging

from ..link import PACKAGE_KIND, PACKAGE_REQUEST_KIND, Link, send_before
from .distribution import BadPackageRequestError, NotInPackageError, PackageServer

log = logging.getLogger("fedswarm.federation.offsite")

REQUEST_TIMEOUT_S = 60.0
_ROUND = 0  # package blobs belong to no round


class PackageClient:
    """A member's side: ``request`` sends to the model owner and returns its answer."""

    def __init__(self, link: Link, owner: str, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self._link = link
        self.owner = owner
        self._timeout_s = timeout_s
        self._waiting: asyncio.Future[bytes] | None = None

    async def request(self, payload: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        self._waiting = waiter = loop.create_future()
        try:
            await self._link.send_blob(self.owner, PACKAGE_REQUEST_KIND, _ROUND, payload)
            return await asyncio.wait_for(waiter, self._timeout_s)
        finally:
            self._waiting = None

    def on_answer(self, sender: str, payload: bytes) -> str | None:
        """An ``offsite-package`` blob arrived; returns a rejection reason, or None."""
        if sender != self.owner:
            return "package answer from a peer that is not the model owner"
        if self._waiting is None or self._waiting.done():
            return "package answer without a request"
        self._waiting.set_result(payload)
        return None


class PackageService:
    """The model owner's side: answer each request with a slice of the package."""

    def __init__(self, link: Link, server: PackageServer) -> None:
        self._link = link
        self._server = server
        self._tasks: set[asyncio.Task[int]] = set()

    def on_request(self, sender: str, payload: bytes) -> str | None:
        """An ``offsite-package-request`` arrived; returns a rejection reason, or None."""
        try:
            answer = self._server.answer(payload)
        except (NotInPackageError, BadPackageRequestError) as exc:
            return str(exc)
        task = asyncio.create_task(
            send_before(self._link, sender, PACKAGE_KIND, _ROUND, answer, None)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return None
