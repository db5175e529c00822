"""A reader that takes what a stream holds in one read and hands it out piece by piece.

Why: py-libp2p's Yamux answers every read that returns data with a WINDOW_UPDATE
frame to the sender (``PY_YAMUX_RELEASE_ON_READ``, on by default), and each such frame
costs a Noise encryption and a socket write here, and a socket read, a decryption and a
dispatch at the sender. A small message read field by field (the 8-byte prefix, then the
signed header, then the body) cost three frames back; read from one chunk it costs one.
On the membership heartbeats that every member sends every other every few seconds,
that was more than half of what a message cost (docs/performance.md, "Small messages read
ahead").

Only for a stream whose every byte belongs to one reader that checks it in order: the
long-lived message stream. A blob stream must not read past its header before the
header is checked and accepted (:func:`.framing.read_signed_header`), so it reads exactly.
What is read ahead was already received and held in Yamux's buffer; at most
``chunk_bytes`` more are held here, and no more is read until they are handed out.
"""

from __future__ import annotations

from .framing import ReadFn

CHUNK_BYTES = 64 * 1024


class ReadAhead:
    """``read(n)`` over ``inner``: at most ``n`` bytes, ``b""`` at the end of the stream."""

    def __init__(self, inner: ReadFn, chunk_bytes: int = CHUNK_BYTES) -> None:
        if chunk_bytes < 1:
            raise ValueError("chunk_bytes must be at least 1")
        self._inner = inner
        self._chunk_bytes = chunk_bytes
        self._data = b""
        self._pos = 0

    @property
    def buffered(self) -> int:
        """Bytes read from the stream and not yet handed out."""
        return len(self._data) - self._pos

    async def read(self, n: int) -> bytes:
        if n <= 0:
            return b""
        if self._pos >= len(self._data):
            self._data = await self._inner(self._chunk_bytes)
            self._pos = 0
            if not self._data:
                return b""
        end = self._pos + n
        piece = self._data[self._pos:end]
        self._pos = min(end, len(self._data))
        return piece
