"""A message stream reads what has arrived in one go: a small message costs the sender one
Yamux window update, not one per field, and read-ahead never changes what is delivered."""

from __future__ import annotations

import os
import random
from collections import Counter
from typing import Any

import pytest
from fedswarm.p2p.read_ahead import ReadAhead
from libp2p.stream_muxer.yamux.yamux import YamuxStream

from .conftest import connected_pair, wait_until
from .test_message_streams import _frame, _write_raw


class _Chunks:
    """A stream's reads: each call returns (up to ``n`` bytes of) the next arrived chunk."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.calls = 0

    async def read(self, n: int) -> bytes:
        self.calls += 1
        if not self.chunks:
            return b""
        chunk = self.chunks.pop(0)
        if len(chunk) > n:
            self.chunks.insert(0, chunk[n:])
            chunk = chunk[:n]
        return chunk


async def test_a_message_that_arrived_in_one_chunk_takes_one_stream_read() -> None:
    inner = _Chunks([b"PREFIX00" + b"h" * 200 + b"b" * 300])
    reader = ReadAhead(inner.read)
    assert await reader.read(8) == b"PREFIX00"
    assert await reader.read(200) == b"h" * 200
    assert await reader.read(300) == b"b" * 300
    assert inner.calls == 1
    assert await reader.read(8) == b""  # the end of the stream, once the buffer is drained


async def test_pieces_come_out_in_order_and_never_longer_than_asked() -> None:
    rng = random.Random(7)
    data = os.urandom(300_000)
    cuts = sorted(rng.sample(range(1, len(data)), 40))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    reader = ReadAhead(_Chunks(chunks).read, chunk_bytes=4096)
    out = bytearray()
    while True:
        want = rng.randint(1, 9000)
        piece = await reader.read(want)
        if not piece:
            break
        assert len(piece) <= want
        assert reader.buffered <= 4096  # never more held than one read could return
        out += piece
    assert bytes(out) == data


async def test_a_read_of_nothing_reads_nothing() -> None:
    inner = _Chunks([b"abc"])
    reader = ReadAhead(inner.read)
    assert await reader.read(0) == b""
    assert inner.calls == 0
    with pytest.raises(ValueError):
        ReadAhead(inner.read, chunk_bytes=0)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_small_messages_cost_the_sender_one_window_update_each(
    node_factory: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """py-libp2p answers every read that returns data with a WINDOW_UPDATE frame; read
    field by field (prefix, header, body) each message cost three."""
    updates: Counter[int] = Counter()  # window updates sent, per Yamux stream
    library_update = YamuxStream.send_window_update

    async def counted(self: YamuxStream, increment: int, skip_lock: bool = False) -> None:
        updates[id(self)] += 1
        await library_update(self, increment, skip_lock)

    monkeypatch.setattr(YamuxStream, "send_window_update", counted)
    a, _, b, inbox_b = await connected_pair(node_factory)
    await a.send_message(b.peer_id, "warm-up", 0, b"open the stream")
    assert await wait_until(lambda: len(inbox_b.blobs) == 1)
    before = Counter(updates)
    sent = 30
    for i in range(sent):
        await a.send_message(b.peer_id, "beat", i, os.urandom(300))
    assert await wait_until(lambda: len(inbox_b.blobs) == 1 + sent)
    # The message stream is the busiest one; other streams (the nodes' start-up address
    # announcements over pubsub) may send a few updates of their own meanwhile.
    spent = max((updates - before).values(), default=0)
    # at most one per message (fewer when messages arrive together)
    assert 0 < spent <= sent, spent


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_messages_written_back_to_back_arrive_whole_across_read_chunks(
    node_factory: Any,
) -> None:
    """Several messages in one write, the last longer than one read-ahead chunk: the
    reader hands each its own bytes, the next message's start stays for the next."""
    a, _, b, inbox_b = await connected_pair(node_factory)
    bodies = [os.urandom(10), os.urandom(5000), os.urandom(200_000)]
    await _write_raw(a, b.peer_id,
                     b"".join(_frame(a, b.peer_id, body) + body for body in bodies))
    assert await wait_until(lambda: len(inbox_b.blobs) == len(bodies))
    assert [data for _, data in inbox_b.blobs] == bodies
