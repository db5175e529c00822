"""The aggregator spools uploads to disk and sums them one chunk at a time (secagg/spool.py).

A keeps every member's checked UPLOAD chunks in that member's spool file, not in RAM,
and makes the sum for D chunk index by chunk index from the files. These tests check
that a member stopping mid-upload leaves nothing in the sum and no file behind, that no
spool file outlives a round however it ends (completed, aborted, cancelled, disk full),
that a full disk ends the round for A with SpoolFullError and tells the group, and that
A holds neither the uploads nor the whole sum in memory while it works.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import stat
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from fedswarm.secagg import spool as spool_module
from fedswarm.secagg.errors import (
    NotEnoughSurvivorsError,
    RoundAbortedError,
    SpoolError,
    SpoolFullError,
)
from fedswarm.secagg.messages import Step
from fedswarm.secagg.messages import peek_binding as peek
from fedswarm.secagg.roles import assign_roles
from fedswarm.secagg.session import AggregationResult, run_secure_aggregation
from fedswarm.secagg.spool import (
    SUFFIX,
    RoundSpool,
    UploadSpool,
    prepare_directory,
    remove_leftovers,
)

from .conftest import SMALL_PARAMS, Group, MemberCrashed, MemoryTransport, random_updates
from .test_dropouts import TIMEOUT, check_survivor_average

STREAMED = dataclasses.replace(SMALL_PARAMS, stream_chunk_ciphertexts=1)
VALUES_PER_CIPHERTEXT = SMALL_PARAMS.slot_count * SMALL_PARAMS.fields_per_slot
N_VALUES = 3 * VALUES_PER_CIPHERTEXT + 500  # 4 ciphertexts: 4 chunks of one each
CIPHERTEXT_BYTES = 2 * SMALL_PARAMS.slot_count * 8  # two polynomials, one 60-bit prime


def _roles(group: Group) -> tuple[str, str, list[str]]:
    a, d = assign_roles(group.members, group.spec.round, group.spec.group_id)
    return a, d, [m for m in group.members if m not in (a, d)]


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


async def _round(
    group: Group,
    pool,
    spool_dir: Path,
    transports: dict[str, MemoryTransport] | None = None,
    n_values: int = N_VALUES,
    aggregator_task: list[asyncio.Task] | None = None,
    timeout: float = TIMEOUT,
):
    transports = transports or {}
    a = _roles(group)[0]
    updates = random_updates(len(group.members), n_values, seed=7)
    weights = [1.0 + i for i in range(len(group.members))]
    tasks = []
    for i, m in enumerate(group.members):
        task = asyncio.ensure_future(
            run_secure_aggregation(
                group.spec,
                group.signers[m],
                group.verify,
                updates[i],
                weights[i],
                transports.get(m) or group.network.transport(m),
                STREAMED,
                step_timeout_s=timeout,
                executor=pool,
                spool_dir=spool_dir,
            )
        )
        if m == a and aggregator_task is not None:
            aggregator_task.append(task)
        tasks.append(task)
    results = list(await asyncio.gather(*tasks, return_exceptions=True))
    return updates, weights, results


class SeesTheSpool(MemoryTransport):
    """A's transport: lists the spool directory when A first sends step (by default,
    when it publishes the survivor set)."""

    def __init__(
        self, group: Group, me: str, spool_dir: Path, step: Step = Step.SURVIVORS
    ) -> None:
        super().__init__(group.network, me, None)
        self.spool_dir = spool_dir
        self.step = step
        self.at_survivors: list[str] | None = None

    async def send(self, recipient: str, data: bytes) -> None:
        if peek(data)[1] is self.step and self.at_survivors is None:
            self.at_survivors = _files(self.spool_dir)
        await super().send(recipient, data)


class CrashMidUpload(MemoryTransport):
    """A member that sends its first two UPLOAD chunks, then crashes."""

    async def send(self, recipient: str, data: bytes) -> None:
        if peek(data)[1] is Step.UPLOAD:
            log = self.network.log
            sent = sum(1 for s, _, d in log if s == self.me and peek(d)[1] is Step.UPLOAD)
            if sent == 2:
                self.network.dead.add(self.me)
                raise MemberCrashed(self.me)
        await super().send(recipient, data)


# -- what the round leaves behind -------------------------------------------------------


async def test_a_completed_round_spools_each_upload_and_leaves_no_file(pool, tmp_path):
    k = 5
    group = Group(k, group_id="spool-complete")
    a, _, uploaders = _roles(group)
    spool_dir = tmp_path / "spool"
    watcher = SeesTheSpool(group, a, spool_dir)
    updates, weights, results = await _round(group, pool, spool_dir, {a: watcher})
    assert all(isinstance(r, AggregationResult) for r in results), results
    # while the survivor set went out: one file per upload and one for A's own words
    assert watcher.at_survivors is not None
    assert len(watcher.at_survivors) == len(uploaders) + 1
    assert all(name.endswith(SUFFIX) for name in watcher.at_survivors)
    assert _files(spool_dir) == []
    assert stat.S_IMODE(spool_dir.stat().st_mode) == 0o700
    check_survivor_average(results, group, updates, weights, list(group.members), k)


async def test_a_member_dropping_mid_upload_leaves_nothing_in_the_sum_and_no_file(pool, tmp_path):
    k = 5  # a group of 5 tolerates one member other than A and D dropping before CONFIRM
    group = Group(k, group_id="spool-crash")
    a, _, uploaders = _roles(group)
    dropper = uploaders[0]
    spool_dir = tmp_path / "spool"
    watcher = SeesTheSpool(group, a, spool_dir)
    crash = CrashMidUpload(group.network, dropper, None)
    updates, weights, results = await _round(
        group, pool, spool_dir, {a: watcher, dropper: crash}
    )
    by_member = dict(zip(group.members, results, strict=True))
    assert isinstance(by_member[dropper], MemberCrashed)
    # its two chunks were spooled and its file deleted before the survivor set went out
    assert watcher.at_survivors is not None
    assert len(watcher.at_survivors) == len(uploaders) - 1 + 1
    survivors = [m for m in group.members if m != dropper]
    for m in survivors:
        assert by_member[m].dropped == (dropper,)
    check_survivor_average(results, group, updates, weights, survivors, k)
    assert _files(spool_dir) == []


async def test_an_aborted_round_leaves_no_spool_file(pool, tmp_path):
    k = 4
    group = Group(k, group_id="spool-abort")
    group.spec = dataclasses.replace(group.spec, min_survivors=k)  # every upload is needed
    a, _, uploaders = _roles(group)
    spool_dir = tmp_path / "spool"
    crash = CrashMidUpload(group.network, uploaders[0], None)
    watcher = SeesTheSpool(group, a, spool_dir, Step.ABORT)
    _, _, results = await _round(group, pool, spool_dir, {uploaders[0]: crash, a: watcher})
    by_member = dict(zip(group.members, results, strict=True))
    # the other upload was spooled whole, then A aborted: too few contributors
    assert isinstance(by_member[a], NotEnoughSurvivorsError), by_member[a]
    assert watcher.at_survivors is not None and len(watcher.at_survivors) == 2
    assert _files(spool_dir) == []


class CountsUploads(MemoryTransport):
    """A's transport: counts the UPLOAD chunks A receives, lists the spool at the third."""

    def __init__(self, group: Group, me: str, spool_dir: Path) -> None:
        super().__init__(group.network, me, None)
        self.spool_dir = spool_dir
        self.uploads = 0
        self.seen: list[str] = []

    async def receive(self, timeout: float) -> tuple[str, bytes]:
        sender, data = await super().receive(timeout)
        if peek(data)[1] is Step.UPLOAD:
            self.uploads += 1
            if self.uploads == 3:
                self.seen = _files(self.spool_dir)
        return sender, data


async def _cancel_once_spooling(counter: CountsUploads, task: list[asyncio.Task]) -> None:
    while counter.uploads < 3:
        await asyncio.sleep(0.002)
    while not task[0].done():  # asyncio.wait_for on 3.11 may swallow a cancel: repeat it
        task[0].cancel()
        await asyncio.sleep(0.01)


async def test_a_cancelled_aggregator_leaves_no_spool_file(pool, tmp_path):
    k = 4
    group = Group(k, group_id="spool-cancel")
    a, _, _ = _roles(group)
    spool_dir = tmp_path / "spool"
    task: list[asyncio.Task] = []
    counter = CountsUploads(group, a, spool_dir)
    canceller = asyncio.ensure_future(_cancel_once_spooling(counter, task))
    _, _, results = await _round(group, pool, spool_dir, {a: counter}, aggregator_task=task)
    await canceller
    by_member = dict(zip(group.members, results, strict=True))
    assert isinstance(by_member[a], asyncio.CancelledError), by_member[a]
    assert counter.seen, "nothing was spooled before the cancel"
    assert _files(spool_dir) == []


# -- a full disk ------------------------------------------------------------------------


async def test_a_full_disk_ends_the_round_for_the_aggregator_and_leaves_nothing(
    pool, tmp_path, monkeypatch
):
    k = 4
    group = Group(k, group_id="spool-enospc")
    a, _, _ = _roles(group)
    spool_dir = tmp_path / "spool"
    real_write_at = spool_module.write_at
    writes = []

    def fills_up(fd: int, data, offset: int) -> int:
        writes.append(len(data))
        if len(writes) > 4:  # some chunks are on disk when the disk fills
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_at(fd, data, offset)

    monkeypatch.setattr(spool_module, "write_at", fills_up)
    loop = asyncio.get_running_loop()
    started = loop.time()
    _, _, results = await _round(group, pool, spool_dir)
    elapsed = loop.time() - started
    by_member = dict(zip(group.members, results, strict=True))
    assert isinstance(by_member[a], SpoolFullError), by_member[a]
    assert "disk is full" in str(by_member[a])
    for m in group.members:
        if m != a:  # told by A's abort, not left to time out
            assert isinstance(by_member[m], RoundAbortedError), by_member[m]
            assert "could not spool" in str(by_member[m])
    assert elapsed < 3 * TIMEOUT
    assert _files(spool_dir) == []


# -- A's memory -------------------------------------------------------------------------

WIDE = 5 * VALUES_PER_CIPHERTEXT + 500  # 6 ciphertexts: 6 chunks per upload


def _aggregator_copy(data: bytes) -> bytes:
    """A's own copy of a received message: its bytes are allocated in this file, so
    tracemalloc can tell how many upload bytes A still holds."""
    return bytes(bytearray(data))


def _traced_bytes(filename: str, all_frames: bool) -> int:
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, filename, all_frames=all_frames)]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


class MeasuresTheAggregator(MemoryTransport):
    """A's transport: before each UPLOAD chunk it receives, how many bytes of earlier
    chunks A still holds; before each SUM chunk it sends, how many bytes A's
    accumulator (the sum) holds."""

    def __init__(self, group: Group, me: str) -> None:
        super().__init__(group.network, me, None)
        self.uploads_held: list[int] = []
        self.sum_held: list[int] = []

    async def receive(self, timeout: float) -> tuple[str, bytes]:
        sender, data = await super().receive(timeout)
        if peek(data)[1] is Step.UPLOAD:
            self.uploads_held.append(_traced_bytes(__file__, all_frames=False))
            data = _aggregator_copy(data)
        return sender, data

    async def send(self, recipient: str, data: bytes) -> None:
        if peek(data)[1] is Step.SUM:
            self.sum_held.append(_traced_bytes("*/secagg/accumulator.py", all_frames=True))
        await super().send(recipient, data)


async def test_the_aggregator_holds_one_chunk_not_the_uploads_or_the_whole_sum(pool, tmp_path):
    k = 4
    group = Group(k, group_id="spool-memory")
    a, _, uploaders = _roles(group)
    probe = MeasuresTheAggregator(group, a)
    tracemalloc.start(10)  # A's accumulator is a few frames below numpy
    try:
        updates, weights, results = await _round(
            group, pool, tmp_path / "spool", {a: probe}, n_values=WIDE, timeout=60.0
        )
    finally:
        tracemalloc.stop()
    assert all(isinstance(r, AggregationResult) for r in results), results
    check_survivor_average(results, group, updates, weights, list(group.members), k)
    chunks = -(-(-(-WIDE // SMALL_PARAMS.fields_per_slot) + 1) // SMALL_PARAMS.slot_count)
    assert len(probe.uploads_held) == len(uploaders) * chunks
    assert len(probe.sum_held) == chunks
    # holding a member's chunks until its last one arrived kept up to 5 of them (330 kB);
    # spooled, each is gone once written (the thread that wrote the last one may still
    # hold it for an instant when the next arrives: at most one)
    assert max(probe.uploads_held) < 2 * CIPHERTEXT_BYTES
    # the whole sum was 6 ciphertexts (390 kB) through every SUM chunk; now one chunk's
    # sum is made and dropped per SUM chunk (the context's modulus row, 64 kB, stays)
    assert max(probe.sum_held) < 2 * CIPHERTEXT_BYTES


# -- the spool file itself --------------------------------------------------------------


def test_an_upload_spool_reads_back_each_chunk_as_appended(tmp_path):
    directory = prepare_directory(tmp_path / "spool")
    spool = UploadSpool(directory, "r1-upload")
    chunks = [[os.urandom(100), os.urandom(3)], [b""], [os.urandom(70000)]]
    for chunk in chunks:
        spool.append([memoryview(c) for c in chunk])
    assert stat.S_IMODE(spool.path.stat().st_mode) == 0o600
    for index in (2, 0, 1):
        assert [bytes(v) for v in spool.read(index)] == chunks[index]
    spool.discard()
    spool.discard()
    assert _files(directory) == []


def test_a_spool_file_cut_short_on_disk_is_a_spool_error(tmp_path):
    rounds = RoundSpool(tmp_path / "spool", "r1")
    rounds.append("peer-01", 0, [b"x" * 50])
    rounds.append("peer-01", 1, [b"y" * 50])
    (path,) = rounds.paths()
    os.truncate(path, path.stat().st_size - 10)
    assert [bytes(v) for v in rounds.read("peer-01", 0)] == [b"x" * 50]
    with pytest.raises(SpoolError):
        rounds.read("peer-01", 1)
    rounds.close()
    assert not path.exists()


def test_own_rows_read_back_as_written(tmp_path):
    rounds = RoundSpool(tmp_path / "spool", "r1")
    rows = rounds.own_rows(4)
    data = np.arange(24, dtype=np.uint64).reshape(6, 4)
    rows.write(0, data[:4])
    rows.write(4, data[4:])
    np.testing.assert_array_equal(rounds.read_own_rows(1, 5), data[1:5])
    rounds.close()
    assert _files(tmp_path / "spool") == []


def test_a_spool_directory_others_may_write_to_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(SpoolError, match="others may write"):
        prepare_directory(shared)


def test_leftover_spool_files_are_removed_and_nothing_else(tmp_path):
    directory = prepare_directory(tmp_path / "spool")
    (directory / f"r3-upload0001-abcd{SUFFIX}").write_bytes(b"left")
    (directory / f"r3-own0002-abcd{SUFFIX}").write_bytes(b"left")
    (directory / "notes.txt").write_text("mine")
    assert remove_leftovers(directory) == 2
    assert _files(directory) == ["notes.txt"]
    assert remove_leftovers(tmp_path / "absent") == 0
