"""Small helpers for libp2p streams, shared by every protocol the node speaks.

py-libp2p signals the end of a stream with exceptions whose classes differ by layer
(Yamux, the network stream), and a reset or close can itself raise or hang on a dead
connection. These helpers turn EOF into ``b""``, a broken stream into
:class:`BlobTruncatedError`, and bound resets and closes to two seconds.
"""

from __future__ import annotations

import logging

import trio
from libp2p.abc import INetStream

from .errors import BlobTruncatedError
from .framing import ReadFn

log = logging.getLogger("fedswarm.p2p.streams")


def stream_reader(stream: INetStream) -> ReadFn:
    """``read(n)`` that returns b"" at EOF and turns a reset into truncation."""

    async def read(n: int) -> bytes:
        try:
            return await stream.read(n)
        except Exception as exc:
            name = type(exc).__name__
            if "EOF" in name:
                return b""
            if "Reset" in name or "Closed" in name or "Stream" in name:
                raise BlobTruncatedError(f"stream broke: {name}: {exc}") from exc
            raise

    return read


async def reset_stream(stream: INetStream) -> None:
    try:
        with trio.move_on_after(2):
            await stream.reset()
    except Exception:
        log.debug("stream reset failed", exc_info=True)


async def close_stream_quietly(stream: INetStream) -> None:
    try:
        with trio.move_on_after(2):
            await stream.close()
    except Exception:
        await reset_stream(stream)
