"""The federation's ``Link`` over this daemon's ``P2PNode``.

``fedswarm.federation`` never imports ``p2p``; this is the one place the two meet on the
sending side (receiving goes through ``Daemon._on_blob`` and the mailbox).
"""

from __future__ import annotations

from fedswarm.p2p.node import P2PNode


class NodeLink:
    """Sends federation messages as signed p2p blobs and kept-stream messages."""

    def __init__(self, node: P2PNode) -> None:
        self._node = node

    @property
    def max_message_bytes(self) -> int:
        return self._node.config.max_message_bytes

    async def send_blob(self, peer: str, kind: str, round: int, payload: bytes) -> None:
        await self._node.send_blob(peer, kind, round, payload)

    async def send_message(self, peer: str, kind: str, round: int, payload: bytes) -> None:
        await self._node.send_message(peer, kind, round, payload)
