"""News that the next copy supersedes (membership heartbeats) goes to every connected
member directly, and a member still being written to is skipped, never queued for."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from fedswarm.p2p.membership import HEARTBEAT_KIND

from .conftest import connected_pair, wait_until

pytestmark = [pytest.mark.timeout(120)]


async def test_a_heartbeat_reaches_each_connected_member_once(node_factory: Any) -> None:
    a, _, _b, inbox_b = await connected_pair(node_factory)
    assert await a.send_to_connected(HEARTBEAT_KIND, 3, b"beat") == 1
    assert await wait_until(lambda: len(inbox_b.blobs) == 1)
    header, body = inbox_b.blobs[0]
    assert (header.kind, header.round, header.sender, body) == (HEARTBEAT_KIND, 3, a.peer_id,
                                                                b"beat")
    stats = a.stats()
    assert stats["messages_sent"] == 1
    assert stats["messages_skipped_busy"] == stats["messages_not_sent"] == 0


async def test_a_member_whose_stream_is_busy_is_skipped_and_counted(node_factory: Any) -> None:
    a, _, b, inbox_b = await connected_pair(node_factory)
    messages = a._handles.messages
    assert messages is not None

    async def send_while_busy() -> int:
        lock = messages._locks.setdefault(b.peer_id, trio.Lock())
        async with lock:  # a protocol message to b is being written
            return await a._sender.send_message_to_idle([b.peer_id], HEARTBEAT_KIND, 0,
                                                        b"beat", 5.0)

    assert await a._call(send_while_busy) == 0
    assert a.stats()["messages_skipped_busy"] == 1
    assert await a.send_to_connected(HEARTBEAT_KIND, 0, b"beat") == 1  # idle again
    assert await wait_until(lambda: len(inbox_b.blobs) == 1)
