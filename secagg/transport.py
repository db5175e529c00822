"""The byte-message seam the daemon implements over p2p blobs."""

from __future__ import annotations

from typing import Protocol


class Transport(Protocol):
    """Point-to-point delivery of opaque signed messages between group members.

    secagg never trusts the transport: every message is signed and bound to its round, so
    the transport may lose, reorder or duplicate messages, and may deliver messages from
    other rounds; the session rejects what does not belong.
    """

    async def send(self, recipient: str, data: bytes) -> None:
        """Deliver data to recipient; raising means unreachable (treated as dropped)."""
        ...

    async def receive(self, timeout: float) -> tuple[str, bytes]:
        """Next (sender, data); raises TimeoutError / asyncio.TimeoutError after timeout."""
        ...
