"""Blob transfer between separate processes, including a sender killed mid-blob."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from fedswarm.p2p.identity import Identity

from .conftest import make_roster, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SENDER = Path(__file__).with_name("blob_sender_main.py")


async def _spawn_sender(
    tmp_path: Path, ids: list[Identity], target: str, size: int
) -> asyncio.subprocess.Process:
    roster_path = tmp_path / "roster.toml"
    make_roster(ids).save(roster_path)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(SENDER),
        ids[1].seed.hex(),
        str(roster_path),
        target,
        str(size),
        stdout=asyncio.subprocess.PIPE,
    )


async def test_blob_from_another_process_arrives_intact(node_factory: Any, tmp_path: Path) -> None:
    ids = [Identity.generate(), Identity.generate()]
    receiver, inbox = await node_factory(ids[0], make_roster(ids))
    proc = await _spawn_sender(tmp_path, ids, receiver.listen_addrs[0], 3 * 2**20)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, out
    assert out.split() == [b"connected", b"sent"]
    header, data = inbox.blobs[0]
    assert header.sender == ids[1].peer_id and len(data) == 3 * 2**20
    assert hashlib.sha256(data).digest() == header.sha256


async def test_sender_killed_mid_blob_is_seen_as_truncation(
    node_factory: Any, tmp_path: Path
) -> None:
    ids = [Identity.generate(), Identity.generate()]
    receiver, inbox = await node_factory(ids[0], make_roster(ids))
    size = 128 * 2**20  # over a second on loopback: ample time to kill it mid-body
    proc = await _spawn_sender(tmp_path, ids, receiver.listen_addrs[0], size)
    try:
        assert await wait_until(lambda: receiver.stats()["bytes_received"] > 2**20, timeout=60)
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), timeout=10)
        assert await wait_until(
            lambda: receiver.stats()["rejected"].get("truncated", 0) == 1, timeout=30
        ), receiver.stats()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert inbox.blobs == []  # the handler never saw partial data
    assert receiver.stats()["bytes_received"] < size
