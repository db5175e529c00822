"""Receiving blobs (``/fedswarm/blob/1.0.0``) and handing them to the daemon.

A blob is checked in the order that costs the receiver least: the signed header
first (signature, then :func:`.admission.header_refusal`), then room to hold it
(:mod:`.inbound`), and only then is it accepted and its body read. A refused sender
is told why in a reply whose first word is a ``framing.REASON_*`` code, so it can
raise the matching error. The body's length and sha256 are signed, which is what
catches a sender that died mid-body (that looks like a clean end of stream).

The final ack goes out only after the daemon's ``on_blob`` returned, so a sender
whose ``send_blob`` returned knows the daemon holds the payload. Messages
(:mod:`.message_streams`) reach the daemon through the same
:meth:`BlobReceiver.hand_to_daemon`.

Only the trio thread runs this module's coroutines; the handler runs on the
daemon's asyncio loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from collections.abc import Awaitable, Callable

import trio
from libp2p.abc import INetStream

from . import framing
from .admission import header_refusal
from .blob_sender import CHUNK_BYTES
from .context import NodeContext
from .errors import BlobBusyError, BlobSignatureError, BlobTruncatedError
from .framing import BlobHeader
from .inbound import InboundLimiter, InboundLimits
from .streams import close_stream_quietly, reset_stream, stream_reader
from .trio_bridge import wait_asyncio_future

# The logger of P2PNode before it was split into modules: log filters keep matching.
log = logging.getLogger("fedswarm.p2p.node")

BlobHandler = Callable[[BlobHeader, bytes], Awaitable[None]]


class BlobReceiver:
    """The blob protocol's stream handler, with its inbound admission limits."""

    def __init__(self, ctx: NodeContext, *, on_blob: BlobHandler) -> None:
        self._ctx = ctx
        self._on_blob = on_blob
        config = ctx.config
        self.inbound = InboundLimiter(
            InboundLimits(
                max_bytes=config.max_inbound_bytes,
                max_blobs=config.max_inbound_blobs,
                max_blobs_per_peer=config.max_inbound_blobs_per_peer,
                # Refuse as "busy" well before the stream's own timeout resets it.
                wait_s=min(config.inbound_wait_s, config.blob_timeout_s / 2),
            )
        )

    async def hand_to_daemon(self, header: BlobHeader, data: bytes) -> None:
        """Run the daemon's ``on_blob`` on its asyncio loop and wait for it (blobs and messages)."""
        loop = self._ctx.handles.require_loop()
        future = asyncio.run_coroutine_threadsafe(self._call_blob_handler(header, data), loop)
        await wait_asyncio_future(future)

    async def _call_blob_handler(self, header: BlobHeader, data: bytes) -> None:
        await self._on_blob(header, data)

    async def handle_stream(self, stream: INetStream) -> None:
        """Stream handler: never lets an exception escape (it would kill the host)."""
        remote = str(stream.muxed_conn.peer_id)
        try:
            with trio.fail_after(self._ctx.config.blob_timeout_s):
                await self._receive_blob(stream, remote)
            await stream.close()
        except _Refused as exc:
            log.warning("refused blob from %s: %s", remote, exc.reason)
            await close_stream_quietly(stream)
        except BlobTruncatedError as exc:
            log.warning("truncated blob from %s: %s", remote, exc)
            self._ctx.counters.reject("truncated", remote, str(exc))
            await reset_stream(stream)
        except trio.TooSlowError:
            log.warning("blob from %s timed out", remote)
            self._ctx.counters.reject("timeout", remote, "blob did not arrive in time")
            await reset_stream(stream)
        except Exception:
            log.exception("blob stream from %s failed", remote)
            self._ctx.counters.reject("internal", remote, "blob stream failed")
            await reset_stream(stream)

    async def _refuse(self, stream: INetStream, reason: str) -> _Refused:
        # Count before the sender can see the refusal, so stats() never lags it.
        self._ctx.counters.reject(
            reason.split(":", 1)[0], str(stream.muxed_conn.peer_id), f"blob refused: {reason}"
        )
        try:
            await stream.write(framing.encode_reply(framing.STATUS_REFUSED, reason))
        except Exception:
            log.debug("could not deliver refusal %r", reason)
        return _Refused(reason)

    async def _receive_blob(self, stream: INetStream, remote: str) -> None:
        read = stream_reader(stream)
        try:
            body, signature = await framing.read_signed_header(read)
            header = framing.verify_header(body, signature)
        except BlobSignatureError as exc:
            raise await self._refuse(stream, f"{framing.REASON_BAD_SIGNATURE}: {exc}") from exc
        reason = header_refusal(
            header, remote, self._ctx.roster, self._ctx.me, self._ctx.config.max_blob_bytes
        )
        if reason is not None:
            raise await self._refuse(stream, reason)
        try:
            slot = await self.inbound.acquire(remote, header.length)
        except BlobBusyError as exc:
            raise await self._refuse(stream, f"{framing.REASON_BUSY}: {exc.reason}") from exc
        try:
            await stream.write(framing.encode_reply(framing.STATUS_OK))
            await self._receive_body(stream, read, remote, header)
        finally:
            slot.release()

    async def _receive_body(
        self, stream: INetStream, read: framing.ReadFn, remote: str, header: BlobHeader
    ) -> None:
        # BytesIO grows in place and getvalue() hands over its buffer without a
        # copy, so the body exists once in memory (plus one chunk).
        buffer = io.BytesIO()
        digest = hashlib.sha256()
        got = 0
        while got < header.length:
            chunk = await read(min(CHUNK_BYTES, header.length - got))
            if not chunk:
                raise BlobTruncatedError(
                    f"stream from {remote} ended after {got} of {header.length} bytes"
                )
            buffer.write(chunk)
            digest.update(chunk)
            got += len(chunk)
            self._ctx.counters.add("bytes_received", len(chunk))
        if digest.digest() != header.sha256:
            raise await self._refuse(stream, f"{framing.REASON_CORRUPT}: sha256 mismatch")
        data = buffer.getvalue()
        del buffer
        try:
            await self.hand_to_daemon(header, data)
        except Exception as exc:
            log.exception(
                "blob handler failed for %s/%s from %s", header.kind, header.round, remote
            )
            raise await self._refuse(
                stream, f"{framing.REASON_HANDLER_ERROR}: {type(exc).__name__}"
            ) from exc
        del data  # the daemon holds it now; not this frame while the ack goes out
        self._ctx.counters.add("blobs_received", 1)
        await stream.write(framing.encode_reply(framing.STATUS_OK))


class _Refused(Exception):
    """Internal: the receiver refused a blob and told the sender why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
