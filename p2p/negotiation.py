"""Open a libp2p stream with the protocol proposal and the first bytes in one write.

py-libp2p's ``host.new_stream`` runs multistream-select as two round trips:
it writes ``/multistream/1.0.0``, waits for the echo, writes the protocol id,
waits for the echo, and only then lets the caller write. On loopback those two
round trips cost about 2.6 ms of a 1 MiB blob's 11 ms; between organisations
on a 40 ms WAN link they would cost 80 ms per blob. The multistream-select
spec lets the initiator send its proposal without waiting for the header echo
(go-multistream's ``SelectProtoOrFail`` always does), and a listener reads
exactly one message at a time, so bytes written behind the proposal wait in
the stream for the protocol's handler. The receiving side is py-libp2p's own
listener, unchanged.

This module does the initiator's half for one known protocol: header, proposal
and the caller's first bytes go out together; the two echoes are checked when
they come back, before the caller reads anything else from the stream. A peer
that answers ``na`` (or anything else) gets the stream reset and the caller a
:class:`ProtocolNegotiationError`; what the caller wrote in the meantime is
then discarded by that peer's multistream reader, never handed to a handler.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.protocol_muxer.exceptions import MultiselectCommunicatorError
from libp2p.protocol_muxer.multiselect_client import MULTISELECT_PROTOCOL_ID
from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator
from libp2p.utils import encode_delim

from .errors import ProtocolNegotiationError
from .streams import reset_stream

# An echo is a short line; a peer that has not answered in this time is not
# going to (py-libp2p's own negotiation allows 30 s, meant for QUIC under load).
NEGOTIATION_TIMEOUT_S = 10.0


def proposal(protocol: TProtocol) -> bytes:
    """The bytes that open a stream for ``protocol``: multistream header, then the proposal."""
    return encode_delim(MULTISELECT_PROTOCOL_ID.encode()) + encode_delim(protocol.encode())


async def open_stream_with(
    host: IHost, peer_id: ID, protocol: TProtocol, first_parts: Sequence[bytes | memoryview]
) -> INetStream:
    """Open a stream to ``peer_id`` for ``protocol`` and write ``first_parts`` at once.

    Returns once the peer has echoed the multistream header and the protocol,
    so the next read on the stream is the protocol's own reply. The parts are
    joined behind :func:`proposal` in one copy (a memoryview of a large payload
    is not copied first on its own); together they should fit the stream's
    initial Yamux window (256 KiB), or the write waits for the peer to read. Raises
    :class:`ProtocolNegotiationError`, or whatever py-libp2p raises when no
    stream can be opened (no connection, connection closing).
    """
    stream = await host.get_network().new_stream(peer_id)
    try:
        await stream.write(b"".join([proposal(protocol), *first_parts]))
        communicator = MultiselectCommunicator(stream)
        with trio.move_on_after(NEGOTIATION_TIMEOUT_S) as scope:
            try:
                header = await communicator.read()
                answer = await communicator.read() if header == MULTISELECT_PROTOCOL_ID else header
            except MultiselectCommunicatorError as exc:
                raise ProtocolNegotiationError(
                    f"{peer_id} closed the stream while negotiating {protocol}: {exc}"
                ) from exc
        if scope.cancelled_caught:
            raise ProtocolNegotiationError(
                f"{peer_id} did not answer the proposal of {protocol} "
                f"in {NEGOTIATION_TIMEOUT_S:.0f} s"
            )
        if header != MULTISELECT_PROTOCOL_ID:
            raise ProtocolNegotiationError(
                f"{peer_id} does not speak multistream-select: {header[:60]!r}"
            )
        if answer != protocol:
            raise ProtocolNegotiationError(
                f"{peer_id} refused protocol {protocol}: answered {answer[:60]!r}"
            )
    except BaseException:
        with trio.CancelScope(shield=True):
            await reset_stream(stream)
        raise
    stream.set_protocol(protocol)
    return stream
