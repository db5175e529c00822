"""A member that was not listening when first dialled can be reached as soon as it is:
py-libp2p's 60 s negative dial cache must not hold back a dial fedswarm asks for."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from fedswarm.p2p.errors import PeerUnreachableError
from fedswarm.p2p.identity import Identity
from fedswarm.p2p.node import NodeConfig

from .conftest import make_roster

pytestmark = [pytest.mark.timeout(120)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_member_started_after_a_failed_dial_is_reached_at_once(
    node_factory: Any,
) -> None:
    ids = [Identity.generate(), Identity.generate()]
    roster = make_roster(ids)
    port = _free_port()
    late_addr = f"/ip4/127.0.0.1/tcp/{port}/p2p/{ids[1].peer_id}"
    early, _ = await node_factory(ids[0], roster)
    with pytest.raises(PeerUnreachableError):
        await early.dial(late_addr)  # not listening yet: every address fails
    await node_factory(ids[1], roster, NodeConfig(listen=f"/ip4/127.0.0.1/tcp/{port}"))
    assert await early.dial(late_addr) == ids[1].peer_id  # within py-libp2p's 60 s
