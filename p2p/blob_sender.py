"""Sending blobs (one acknowledged stream each) and messages (one shared stream).

Both carry the same signed header (:mod:`.framing`): a blob goes over a fresh
``/fedswarm/blob/1.0.0`` stream and waits for the receiver's accept and its final
ack; a message is written to the member's long-lived stream
(:mod:`.message_streams`) and is not acknowledged. Both dial the member first when
no connection is open, and both turn trio timeouts and py-libp2p's stream errors
into :class:`~.errors.BlobError` subclasses, so the daemon sees one family of errors.

The write sizes below come from Yamux and were measured (docs/performance.md).
Only the trio thread runs this module's coroutines.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable

import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.stream_muxer.yamux.yamux import DEFAULT_WINDOW_SIZE as _YAMUX_WINDOW
from libp2p.stream_muxer.yamux.yamux import HEADER_SIZE as _YAMUX_HEADER
from libp2p.stream_muxer.yamux.yamux import MAX_MESSAGE_SIZE as _YAMUX_FRAME

from . import framing
from .admission import refusal_error
from .context import NodeContext
from .errors import BlobRejectedError, BlobTimeoutError, BlobTruncatedError, P2PError
from .framing import BlobHeader
from .negotiation import open_stream_with, proposal
from .streams import reset_stream, stream_reader

# Yamux cuts every write into frames of at most 65524 payload bytes, each one
# Noise-encrypted, sent and woken up for separately. A 256 KiB write used to
# become four full frames plus a 48-byte fifth; a whole number of frames per
# write sends 20 % fewer frames for the same bytes.
_FRAME_PAYLOAD = _YAMUX_FRAME - _YAMUX_HEADER
CHUNK_BYTES = 4 * _FRAME_PAYLOAD
# A small blob's header and first body bytes go out in one write, before the
# accept: a new Yamux stream may send its initial receive window (256 KiB)
# without a single read by the peer, so this write never waits on a receiver
# that is still checking the header, waiting for inbound room, or refusing.
# One write of 4 whole frames (262096 B) fits that window.
_FIRST_WRITE = min(CHUNK_BYTES, _YAMUX_WINDOW)
# Hashing a payload up to this size inline costs the trio thread at most about
# 1.5 ms; handing it to a worker thread cost more than that on 2 cores (the
# thread competes with the stream negotiation it was meant to overlap):
# measured 1 MiB blobs 12.7 ms inline vs 13.3-13.8 ms threaded, crossover
# between 2 and 4 MiB (docs/performance.md).
_INLINE_HASH_MAX_BYTES = 2 * 1024 * 1024
_BLOB_PROPOSAL = proposal(TProtocol(framing.BLOB_PROTOCOL))
_log = logging.getLogger("fedswarm.p2p.messages")


class BlobSender:
    """Signs headers and writes blobs and messages to members."""

    def __init__(
        self, ctx: NodeContext, *, ensure_connected: Callable[[str], Awaitable[None]]
    ) -> None:
        self._ctx = ctx
        self._ensure_connected = ensure_connected
        self._writing: set[str] = set()  # members a send_message_to_idle write is going to

    def header_to(
        self, peer_id: str, kind: str, round: int, length: int, sha256: bytes
    ) -> BlobHeader:
        """The header this node signs for a blob or message to ``peer_id``."""
        return BlobHeader(
            federation_id=self._ctx.roster.federation_id,
            sender=self._ctx.me,
            recipient=peer_id,
            kind=kind,
            round=round,
            length=length,
            sha256=sha256,
            sent_at=time.time(),
        )

    # blobs ----------------------------------------------------------------------------

    async def send_blob(
        self, peer_id: str, kind: str, round: int, payload: bytes, timeout: float
    ) -> None:
        """Hash, sign and send ``payload``; returns once the receiver acknowledged it."""

        async def header() -> BlobHeader:
            return self.header_to(peer_id, kind, round, len(payload), await _digest(payload))

        await self._transfer(peer_id, f"{kind}/{round}", header, payload, timeout)

    async def send_prebuilt(self, header: BlobHeader, payload: bytes, timeout: float) -> None:
        """Send a header built in advance (hostile-peer tests forge them this way)."""

        async def ready() -> BlobHeader:
            return header

        label = f"{header.kind}/{header.round}"
        await self._transfer(header.recipient, label, ready, payload, timeout)

    async def _transfer(
        self,
        peer_id: str,
        label: str,
        header: Callable[[], Awaitable[BlobHeader]],
        payload: bytes,
        timeout: float,
    ) -> None:
        try:
            with trio.fail_after(timeout):
                await self._ensure_connected(peer_id)
                await self._write_blob(peer_id, await header(), payload)
        except trio.TooSlowError as exc:
            raise BlobTimeoutError(
                f"blob {label} to {peer_id} not acknowledged in {timeout} s"
            ) from exc
        except P2PError:
            raise
        except Exception as exc:  # libp2p stream/muxer errors
            if "window update" in str(exc):
                raise BlobTimeoutError(f"{peer_id} stopped reading the blob: {exc}") from exc
            raise BlobRejectedError(f"stream failed: {type(exc).__name__}: {exc}") from exc
        self._ctx.counters.add("blobs_sent", 1)

    async def _write_blob(self, peer_id: str, header: BlobHeader, payload: bytes) -> None:
        """Open the blob's stream and send it: one write, then the accept, the rest, the ack."""
        host = self._ctx.handles.require_host()
        frame = framing.encode_signed_header(header, self._ctx.identity)
        view = memoryview(payload)
        early = 0
        if len(payload) <= self._ctx.config.pipeline_max_blob_bytes:
            room = _FIRST_WRITE - len(_BLOB_PROPOSAL) - len(frame)
            early = min(len(payload), max(0, room))
        # Protocol proposal, header and early body in one write (never more
        # than the stream's initial window, so it cannot block); the receiver
        # negotiates and checks the header while these bytes are on their way.
        stream = await open_stream_with(
            host,
            ID.from_base58(peer_id),
            TProtocol(framing.BLOB_PROTOCOL),
            [frame, view[:early]],
        )
        try:
            self._ctx.counters.add("bytes_sent", early)
            read = stream_reader(stream)
            status, reason = await _read_reply_or_rejected(read)
            if status != framing.STATUS_OK:
                raise refusal_error(reason)
            for offset in range(early, len(payload), CHUNK_BYTES):
                chunk = view[offset : offset + CHUNK_BYTES].tobytes()
                await stream.write(chunk)
                self._ctx.counters.add("bytes_sent", len(chunk))
            # Half-close now: the FIN travels behind the body instead of after
            # the ack, and the receiver's reply still comes back on its own half.
            await stream.close()
            status, reason = await _read_reply_or_rejected(read)
            if status != framing.STATUS_OK:
                raise refusal_error(reason)
        except BaseException:
            with trio.CancelScope(shield=True):
                await reset_stream(stream)
            raise

    # messages -------------------------------------------------------------------------

    async def send_message(
        self, peer_id: str, kind: str, round: int, payload: bytes, timeout: float
    ) -> None:
        """Sign and write ``payload`` to the member's message stream; no ack."""
        messages = self._ctx.handles.messages
        assert messages is not None
        header = self.header_to(peer_id, kind, round, len(payload), _sha256(payload))
        frame = framing.encode_signed_header(header, self._ctx.identity) + payload
        try:
            with trio.fail_after(timeout):
                await self._ensure_connected(peer_id)
                await messages.send(peer_id, frame, len(payload))
        except trio.TooSlowError as exc:
            raise BlobTimeoutError(
                f"message {kind}/{round} to {peer_id} not written in {timeout} s"
            ) from exc
        except P2PError:
            raise
        except Exception as exc:  # libp2p stream/muxer errors while opening the stream
            raise BlobRejectedError(f"message stream failed: {type(exc).__name__}: {exc}") from exc

    async def send_message_to_idle(
        self, peers: list[str], kind: str, round: int, payload: bytes, timeout: float
    ) -> int:
        """Start writing ``payload`` to each of ``peers`` whose message stream is idle.

        Returns at once, with how many writes it started: each runs in the node's
        nursery for up to ``timeout``, so one slow member holds up neither the others
        nor the caller. A member whose previous write is still going (this kind or any
        other message) is skipped, not queued behind it; a failed write is counted and
        dropped (the next one opens a new stream). For news the next copy supersedes.
        """
        messages = self._ctx.handles.messages
        assert messages is not None
        nursery = self._ctx.handles.require_nursery()
        started = 0

        async def one(peer_id: str) -> None:
            try:
                await self.send_message(peer_id, kind, round, payload, timeout)
            except P2PError as exc:
                self._ctx.counters.add("messages_not_sent", 1)
                _log.debug("%s to %s not sent: %s", kind, peer_id, exc)
            finally:
                self._writing.discard(peer_id)

        for peer_id in peers:
            if peer_id in self._writing or messages.busy(peer_id):
                self._ctx.counters.add("messages_skipped_busy", 1)
                continue
            self._writing.add(peer_id)
            nursery.start_soon(one, peer_id)
            started += 1
        return started


async def _digest(payload: bytes) -> bytes:
    """sha256 of a payload: inline when small, else in a worker thread.

    hashlib releases the GIL, so a large payload's hash (0.4 s for 200 MiB)
    does not hold the trio thread and every other stream with it. A payload of
    at most ``_INLINE_HASH_MAX_BYTES`` is hashed on the spot: the thread
    hand-off costs more than the hash. A cancelled sender waits for its hash
    to finish (under a second for 512 MiB) before it sees the cancellation.
    """
    if len(payload) <= _INLINE_HASH_MAX_BYTES:
        return _sha256(payload)
    return await trio.to_thread.run_sync(_sha256, payload)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


async def _read_reply_or_rejected(read: framing.ReadFn) -> tuple[int, str]:
    try:
        return await framing.read_reply(read)
    except BlobTruncatedError as exc:
        raise BlobRejectedError("receiver closed the stream without a reply") from exc
