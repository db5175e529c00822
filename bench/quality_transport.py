"""In-memory stand-ins for the network, so the quick benchmark runs the real averaging code.

The quick variant runs every peer of a federated arm in one process. What crosses the
"network" here is exactly what crosses libp2p in a daemon: the plain arm's encoded
updates go through the daemon's own ``Mailbox`` and ``plain_group_average``; the
secure arm's signed protocol messages go through a ``secagg.Transport`` made of asyncio
queues. Only the sockets are missing, which is the point: the quick variant measures
learning quality and the protocol's own cost, not loopback TCP.
"""

from __future__ import annotations

import asyncio

from fedswarm.federation.link import SendFunction
from fedswarm.federation.mailbox import Letter, Mailbox

MAILBOX_LIMIT = 256 * 2**20


class MailboxNetwork:
    """One daemon ``Mailbox`` per peer; ``send_blob`` files a letter in the recipient's."""

    def __init__(self, peers: list[str]) -> None:
        self.mailboxes = {p: Mailbox(max_bytes_per_sender_per_round=MAILBOX_LIMIT) for p in peers}

    def advance(self, round: int) -> None:
        for mailbox in self.mailboxes.values():
            mailbox.advance(round)

    def sender(self, me: str) -> SendFunction:
        """The ``send_blob(recipient, kind, round, payload)`` callable for peer ``me``."""

        async def send_blob(recipient: str, kind: str, round: int, payload: bytes) -> None:
            self.mailboxes[recipient].put(Letter(me, round, kind, payload))

        return send_blob


class QueueTransport:
    """``fedswarm.secagg.Transport`` over per-peer asyncio queues."""

    def __init__(self, queues: dict[str, asyncio.Queue[tuple[str, bytes]]], me: str) -> None:
        self._queues = queues
        self._me = me

    async def send(self, recipient: str, data: bytes) -> None:
        if recipient not in self._queues:
            raise ConnectionError(f"{recipient} is not in this group")
        await self._queues[recipient].put((self._me, data))

    async def receive(self, timeout: float) -> tuple[str, bytes]:
        return await asyncio.wait_for(self._queues[self._me].get(), timeout)


def queue_transports(members: tuple[str, ...]) -> dict[str, QueueTransport]:
    """A fresh set of connected transports for one group and round."""
    queues: dict[str, asyncio.Queue[tuple[str, bytes]]] = {m: asyncio.Queue() for m in members}
    return {m: QueueTransport(queues, m) for m in members}
