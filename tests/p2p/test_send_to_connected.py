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
    assert await wait_until(lambda: a.stats()["messages_sent"] == 1)
    stats = a.stats()
    assert stats["messages_skipped_busy"] == stats["messages_not_sent"] == 0


async def test_a_member_whose_stream_is_busy_is_skipped_and_counted(node_factory: Any) -> None:
    a, _, b, inbox_b = await connected_pair(node_factory)
    messages = a._handles.messages
    assert messages is not None

    async def send_while_busy() -> list[int]:
        lock = messages._locks.setdefault(b.peer_id, trio.Lock())
        async with lock:  # a protocol message to b is being written
            return [await a._sender.send_message_to_idle([b.peer_id], HEARTBEAT_KIND, 0,
                                                         b"beat", 5.0) for _ in range(2)]

    assert await a._call(send_while_busy) == [0, 0]
    assert a.stats()["messages_skipped_busy"] == 2
    assert await a.send_to_connected(HEARTBEAT_KIND, 0, b"beat") == 1  # idle again
    assert await wait_until(lambda: len(inbox_b.blobs) == 1)


async def test_a_write_still_starting_is_not_doubled_by_the_next_beat(node_factory: Any) -> None:
    """Writes run on their own: two beats in a row, before the first write began,
    start one write to the member, and the caller never waits on it."""
    a, _, b, inbox_b = await connected_pair(node_factory)

    async def two_beats() -> list[int]:
        return [await a._sender.send_message_to_idle([b.peer_id], HEARTBEAT_KIND, 0,
                                                     b"beat", 5.0) for _ in range(2)]

    assert await a._call(two_beats) == [1, 0]
    assert await wait_until(lambda: len(inbox_b.blobs) == 1)
    assert a.stats()["messages_skipped_busy"] == 1
