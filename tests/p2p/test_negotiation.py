"""Opening a stream with the protocol proposal and the first bytes in one write.

Two real py-libp2p hosts (Noise + Yamux, loopback) in one trio run; the
listening side is py-libp2p's own multistream-select, unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import multiaddr
import pytest
import trio
from fedswarm.p2p.errors import ProtocolNegotiationError
from fedswarm.p2p.host import build_host
from fedswarm.p2p.identity import Identity
from fedswarm.p2p.negotiation import open_stream_with
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

ECHO = TProtocol("/test/echo/1.0.0")
LOOPBACK = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")


def run_pair(body: Callable[[Any, ID, list[bytes]], Awaitable[None]]) -> list[bytes]:
    """Run ``body(dialer_host, listener_id, received)`` against a listener whose
    echo handler appends what it reads (up to 64 bytes) to ``received`` and
    answers ``ok:`` + those bytes."""
    received: list[bytes] = []

    async def echo(stream: Any) -> None:
        data = await stream.read(64)
        received.append(data)
        await stream.write(b"ok:" + data)
        await stream.close()

    async def main() -> None:
        listener = build_host(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"])
        dialer = build_host(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"])
        with trio.fail_after(30):
            async with listener.run([LOOPBACK]), dialer.run([LOOPBACK]):
                listener.set_stream_handler(ECHO, echo)
                await dialer.connect(PeerInfo(listener.get_id(), listener.get_addrs()))
                await body(dialer, listener.get_id(), received)

    trio.run(main)
    return received


def test_first_bytes_reach_the_handler_and_the_next_read_is_its_reply() -> None:
    replies: list[bytes] = []

    async def body(dialer: Any, peer: ID, received: list[bytes]) -> None:
        stream = await open_stream_with(dialer, peer, ECHO, [b"hello"])
        assert stream.get_protocol() == ECHO
        # The echoes of the negotiation were consumed: this read is the handler's.
        replies.append(await stream.read(64))
        await stream.close()

    received = run_pair(body)
    assert received == [b"hello"]
    assert replies == [b"ok:hello"]


def test_unsupported_protocol_raises_and_its_bytes_reach_no_handler() -> None:
    async def body(dialer: Any, peer: ID, received: list[bytes]) -> None:
        with pytest.raises(ProtocolNegotiationError, match="refused protocol /test/other"):
            await open_stream_with(dialer, peer, TProtocol("/test/other/1.0.0"), [b"secret"])
        # The connection is intact: the next stream on it is negotiated and served.
        stream = await open_stream_with(dialer, peer, ECHO, [b"after"])
        assert await stream.read(64) == b"ok:after"

    received = run_pair(body)
    assert received == [b"after"]  # "secret" never reached the echo handler
