"""Small signed messages over one long-lived stream per member (``/fedswarm/msg/1.0.0``).

Why not a blob each: a fresh stream costs py-libp2p two multistream-select round
trips, a Yamux SYN and FIN and several Noise frames — 7–9 ms of CPU across sender and
receiver for a 2 KB blob, against about 2 ms for the same message on a stream that
stays open (docs/performance.md). A secure-aggregation round of four members sends
about fifty such messages, so on a small model the stream set-up, not the
cryptography, was what a round waited for.

Wire format: a stream carries any number of messages, each the blob header frame of
:mod:`.framing` (same signed JSON header, same checks, see :mod:`.admission`) followed
by exactly ``header.length`` body bytes. There is no reply: a message is delivered in
order behind the ones before it, or its stream breaks. ``send`` returns once the bytes
are written, so a sender that must know the receiver's handler took a payload uses a
blob, which is acknowledged after the handler returns.

A receiver that sees anything wrong (bad signature, non-member, wrong recipient,
oversized, truncated, corrupt) counts it, logs it and resets that stream; the sender
opens a new one for its next message. Only the trio thread touches this object.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from . import framing
from .admission import header_refusal
from .errors import BlobRejectedError, BlobSignatureError, BlobTruncatedError
from .framing import BlobHeader
from .read_ahead import ReadAhead
from .roster import Roster
from .streams import reset_stream, stream_reader

log = logging.getLogger("fedswarm.p2p.messages")

MESSAGE_PROTOCOL = "/fedswarm/msg/1.0.0"
# Inbound message streams one peer may hold open at once. A well-behaved sender has
# one, and briefly two while its replacement for a broken one opens.
MAX_STREAMS_PER_PEER = 4

Deliver = Callable[[BlobHeader, bytes], Awaitable[None]]


class MessageStreams:
    """Outbound stream cache and inbound stream handler for small messages."""

    def __init__(
        self,
        host: IHost,
        me: str,
        roster: Callable[[], Roster],
        *,
        max_message_bytes: int,
        body_timeout_s: float,
        deliver: Deliver,
        count_reject: Callable[[str, str | None, str], None],
        add_stat: Callable[[str, int], None],
        heard: Callable[[str], None] = lambda peer_id: None,
    ) -> None:
        self._host = host
        self._me = me
        self._roster = roster
        self._max_bytes = max_message_bytes
        self._body_timeout_s = body_timeout_s
        self._deliver = deliver
        self._count_reject = count_reject
        self._add_stat = add_stat
        self._heard = heard  # a valid message proves the sender's link (ping.Pinger.heard)
        self._out: dict[str, INetStream] = {}
        self._locks: dict[str, trio.Lock] = {}
        self._inbound: Counter[str] = Counter()

    # sending -------------------------------------------------------------------------

    async def send(self, peer_id: str, frame: bytes, body_bytes: int) -> None:
        """Write one framed message (header frame + body) to ``peer_id``'s stream.

        A cached stream that fails (its connection dropped, or the receiver reset it)
        is replaced once; a new stream that fails raises :class:`BlobRejectedError`.
        A cancelled or timed-out write drops the stream, since the peer may hold half
        a message on it.
        """
        lock = self._locks.setdefault(peer_id, trio.Lock())
        async with lock:
            for _attempt in range(2):
                stream = self._out.get(peer_id)
                fresh = stream is None
                if stream is None:
                    stream = await self._host.new_stream(
                        ID.from_base58(peer_id), [TProtocol(MESSAGE_PROTOCOL)]
                    )
                    self._out[peer_id] = stream
                    self._add_stat("message_streams_opened", 1)
                try:
                    await stream.write(frame)
                except Exception as exc:
                    await self._drop(peer_id, stream)
                    if fresh:
                        raise BlobRejectedError(
                            f"message stream to {peer_id} failed: {type(exc).__name__}: {exc}"
                        ) from exc
                    continue
                except BaseException:
                    await self._drop(peer_id, stream)
                    raise
                self._add_stat("messages_sent", 1)
                self._add_stat("bytes_sent", body_bytes)
                return

    def busy(self, peer_id: str) -> bool:
        """Whether a message to ``peer_id`` is being written (or waits to be) now.

        A sender of periodic news (heartbeats) skips a busy member rather than queue
        behind it: on a starved machine queued beats arrived minutes late and stale.
        """
        lock = self._locks.get(peer_id)
        return lock is not None and lock.locked()

    async def _drop(self, peer_id: str, stream: INetStream) -> None:
        if self._out.get(peer_id) is stream:
            del self._out[peer_id]
        with trio.CancelScope(shield=True):
            await reset_stream(stream)

    # receiving -----------------------------------------------------------------------

    async def handle(self, stream: INetStream) -> None:
        """Stream handler: reads messages until the stream ends; never raises."""
        remote = str(stream.muxed_conn.peer_id)
        if self._inbound[remote] >= MAX_STREAMS_PER_PEER:
            self._refused(remote, f"{framing.REASON_BUSY}: {MAX_STREAMS_PER_PEER} message streams")
            await reset_stream(stream)
            return
        self._inbound[remote] += 1
        try:
            await self._read_messages(stream, remote)
        except _Refused as exc:
            self._refused(remote, exc.reason)
            await reset_stream(stream)
        except trio.TooSlowError:
            self._refused(remote, "timeout: message body did not arrive")
            await reset_stream(stream)
        except Exception:
            log.exception("message stream from %s failed", remote)
            self._count_reject("internal", remote, "message stream failed")
            await reset_stream(stream)
        finally:
            self._inbound[remote] -= 1
            if self._inbound[remote] <= 0:
                del self._inbound[remote]

    def _refused(self, remote: str, reason: str) -> None:
        self._count_reject(reason.split(":", 1)[0], remote, f"message refused: {reason}")
        log.warning("refused message from %s: %s", remote, reason)

    async def _read_messages(self, stream: INetStream, remote: str) -> None:
        # Every byte on this stream is a message for this loop, so it may read ahead:
        # one read (and one Yamux window update to the sender) per arriving chunk
        # instead of three per message (read_ahead.py).
        read = ReadAhead(stream_reader(stream)).read
        while True:
            started = _Started(read)
            try:
                body, signature = await framing.read_signed_header(started.read)
            except BlobTruncatedError as exc:
                if not started.any:
                    return  # the sender closed (or reset) between messages
                raise _Refused(f"truncated: {exc}") from exc
            except BlobSignatureError as exc:
                raise _Refused(f"{framing.REASON_BAD_SIGNATURE}: {exc}") from exc
            try:
                header = framing.verify_header(body, signature)
            except BlobSignatureError as exc:
                raise _Refused(f"{framing.REASON_BAD_SIGNATURE}: {exc}") from exc
            reason = header_refusal(header, remote, self._roster(), self._me, self._max_bytes)
            if reason is not None:
                raise _Refused(reason)
            try:
                with trio.fail_after(self._body_timeout_s):
                    data = await framing.read_exactly(read, header.length)
            except BlobTruncatedError as exc:
                raise _Refused(f"truncated: {exc}") from exc
            if hashlib.sha256(data).digest() != header.sha256:
                raise _Refused(f"{framing.REASON_CORRUPT}: sha256 mismatch")
            self._heard(remote)
            self._add_stat("messages_received", 1)
            self._add_stat("bytes_received", len(data))
            try:
                await self._deliver(header, data)
            except Exception:
                log.exception(
                    "message handler failed for %s/%s from %s", header.kind, header.round, remote
                )


class _Started:
    """Wraps a reader to tell a clean end between messages from one inside a message."""

    def __init__(self, read: framing.ReadFn) -> None:
        self._inner = read
        self.any = False

    async def read(self, n: int) -> bytes:
        chunk = await self._inner(n)
        if chunk:
            self.any = True
        return chunk


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
