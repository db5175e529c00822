"""UPLOAD, SUM and RESULT travel as signed chunks (secagg/chunks.py).

Each chunk is bound to the round, group, sender and step by the signed header and carries
(index, count) in its signed payload; the count is fixed by the vector length agreed in
KEYS. These tests check that a chunk out of order, repeated, from an earlier round, with
a forged count or from a non-member is refused with its own error and never reaches the
sum; that a member stopping mid-upload is a dropout with nothing of it in the average;
and that a round in many chunks gives exactly the average of a round in one.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

import numpy as np
import pytest
from fedswarm.secagg.chunks import (
    PREFIX,
    add_prefix,
    chunk_slots,
    read_prefix,
    result_chunk_values,
    stream_chunk_count,
)
from fedswarm.secagg.errors import (
    ChunkCountError,
    ChunkOrderError,
    ProtocolViolationError,
    ReplayError,
    UnexpectedStepError,
)
from fedswarm.secagg.inbox import Inbox, Roles
from fedswarm.secagg.messages import RoundBinding, Step, decode_message, encode_message
from fedswarm.secagg.messages import peek_binding as peek
from fedswarm.secagg.roles import assign_roles
from fedswarm.secagg.session import AggregationResult
from fedswarm.secagg.signing import Ed25519Signer, verifier_from_keys

from .conftest import (
    SMALL_PARAMS,
    Group,
    MemberCrashed,
    MemoryTransport,
    NowhereTransport,
    random_updates,
)
from .test_dropouts import TIMEOUT, check_survivor_average
from .test_round_average import run_group, weighted_average

# one ciphertext per chunk: a vector of a few ciphertexts streams in several chunks
STREAMED = dataclasses.replace(SMALL_PARAMS, stream_chunk_ciphertexts=1)
N_VALUES = 2 * SMALL_PARAMS.slot_count * SMALL_PARAMS.fields_per_slot + 500  # 3 ciphertexts
CHUNKS = stream_chunk_count(
    -(-N_VALUES // SMALL_PARAMS.fields_per_slot) + 1, SMALL_PARAMS.slot_count, 1
)
CONTEXT = bytes(32)


def test_the_vector_length_fixes_every_chunk_count_and_cut() -> None:
    assert CHUNKS == 3
    n_slots = -(-N_VALUES // SMALL_PARAMS.fields_per_slot) + 1
    cuts = [chunk_slots(i, n_slots, SMALL_PARAMS.slot_count, 1) for i in range(CHUNKS)]
    assert cuts[0][0] == 0 and cuts[-1][1] == n_slots
    assert all(a[1] == b[0] for a, b in itertools.pairwise(cuts))
    fields = SMALL_PARAMS.fields_per_slot
    counts = [
        result_chunk_values(i, N_VALUES, n_slots, SMALL_PARAMS.slot_count, 1, fields)
        for i in range(CHUNKS)
    ]
    assert sum(counts) == N_VALUES
    assert stream_chunk_count(n_slots, SMALL_PARAMS.slot_count, 128) == 1


# -- the inbox refuses bad chunks ------------------------------------------------------


def _inbox(group: Group, me: str) -> Inbox:
    a, d = assign_roles(group.members, group.spec.round, group.spec.group_id)
    binding = RoundBinding(group.spec.federation_id, group.spec.group_id, group.spec.round)
    roles = Roles(frozenset(group.members), a, d)
    inbox = Inbox(NowhereTransport(), binding, me, group.verify, roles)
    inbox.set_context(CONTEXT)
    inbox.expect_chunks(Step.UPLOAD, CHUNKS)
    return inbox


def _chunk(
    group: Group,
    sender: str,
    recipient: str,
    index: int,
    count: int = CHUNKS,
    round_: int | None = None,
) -> bytes:
    binding = RoundBinding(
        group.spec.federation_id,
        group.spec.group_id,
        group.spec.round if round_ is None else round_,
    )
    # packed by hand: add_prefix itself refuses an index past the count
    payload = PREFIX.pack(index, count) + f"body-{index}".encode()
    return encode_message(group.signers[sender], binding, Step.UPLOAD, recipient, CONTEXT, payload)


def _roles(group: Group) -> tuple[str, str, str]:
    a, d = assign_roles(group.members, group.spec.round, group.spec.group_id)
    member = next(m for m in group.members if m not in (a, d))
    return a, d, member


def _buffered(inbox: Inbox, sender: str) -> list[int]:
    return [key[2] for key in inbox._buffer if key[0] is Step.UPLOAD and key[1] == sender]


def test_chunks_in_order_are_buffered_with_their_index_and_body() -> None:
    group = Group(4)
    a, _, member = _roles(group)
    inbox = _inbox(group, a)
    for index in range(CHUNKS):
        inbox.accept(member, _chunk(group, member, a, index))
    assert not inbox.rejected
    assert _buffered(inbox, member) == [0, 1, 2]
    first = inbox._buffer[(Step.UPLOAD, member, 0)]
    assert first.chunk == 0 and bytes(first.payload) == b"body-0"  # the prefix is off


def test_a_repeated_chunk_is_refused_and_the_stream_goes_on() -> None:
    group = Group(4)
    a, _, member = _roles(group)
    inbox = _inbox(group, a)
    inbox.accept(member, _chunk(group, member, a, 0))
    inbox.accept(member, _chunk(group, member, a, 0))
    inbox.accept(member, _chunk(group, member, a, 1))
    assert [type(e) for e in inbox.rejected] == [ChunkOrderError]
    assert _buffered(inbox, member) == [0, 1]


def test_a_chunk_out_of_order_breaks_that_senders_stream() -> None:
    group = Group(4)
    a, _, member = _roles(group)
    inbox = _inbox(group, a)
    inbox.accept(member, _chunk(group, member, a, 1))  # skips chunk 0
    inbox.accept(member, _chunk(group, member, a, 0))
    inbox.accept(member, _chunk(group, member, a, 2))
    assert [type(e) for e in inbox.rejected] == [ChunkOrderError] * 3
    assert "skips ahead" in str(inbox.rejected[0])
    assert _buffered(inbox, member) == []  # its upload can never complete


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda g, m, a: _chunk(g, m, a, 0, count=CHUNKS + 1), ChunkCountError),
        (lambda g, m, a: _chunk(g, m, a, CHUNKS, count=CHUNKS), ChunkCountError),
        (lambda g, m, a: _chunk(g, m, a, 0, round_=g.spec.round - 1), ReplayError),
        (lambda g, m, a: _chunk(g, "outsider", a, 0), ProtocolViolationError),
        (lambda g, m, a: _chunk(g, m, m, 0), ProtocolViolationError),  # not to me
    ],
    ids=["forged-count", "index-past-count", "previous-round", "non-member", "misaddressed"],
)
def test_bad_chunks_are_refused_with_their_own_error(
    make: Callable[[Group, str, str], bytes], error: type[Exception]
) -> None:
    group = Group(4)
    # a roster peer outside this group: its signature checks, its membership does not
    group.signers["outsider"] = Ed25519Signer.generate("outsider")
    group.verify = verifier_from_keys({m: s.verify_key for m, s in group.signers.items()})
    a, _, member = _roles(group)
    inbox = _inbox(group, a)
    inbox.accept(member, make(group, member, a))
    assert len(inbox.rejected) == 1 and isinstance(inbox.rejected[0], error), inbox.rejected
    assert _buffered(inbox, member) == []
    inbox.accept(member, _chunk(group, member, a, 0))  # the honest chunk 0 still counts
    assert _buffered(inbox, member) == [0]


def test_an_upload_chunk_sent_to_another_member_than_a_is_refused() -> None:
    group = Group(4)
    _, d, member = _roles(group)
    inbox = _inbox(group, d)
    inbox.accept(member, _chunk(group, member, d, 0))
    assert isinstance(inbox.rejected[0], UnexpectedStepError)


# -- whole rounds ----------------------------------------------------------------------


Rewrite = Callable[[list[bytes]], list[bytes]]


class Tampering(MemoryTransport):
    """A member whose UPLOAD chunks pass through rewrite before they leave (held until
    its last chunk, so rewrite sees the whole stream); everything else is honest."""

    def __init__(self, group: Group, me: str, rewrite: Rewrite) -> None:
        super().__init__(group.network, me, None)
        self.rewrite = rewrite
        self.held: list[bytes] = []

    async def send(self, recipient: str, data: bytes) -> None:
        if peek(data)[1] is not Step.UPLOAD:
            await super().send(recipient, data)
            return
        self.held.append(data)
        if len(self.held) < CHUNKS:
            return
        for message in self.rewrite(self.held):
            await super().send(recipient, message)


class CrashMidUpload(MemoryTransport):
    """A member that sends its first UPLOAD chunk, then crashes."""

    async def send(self, recipient: str, data: bytes) -> None:
        if peek(data)[1] is Step.UPLOAD and any(
            s == self.me and peek(d)[1] is Step.UPLOAD for s, _, d in self.network.log
        ):
            self.network.dead.add(self.me)
            raise MemberCrashed(self.me)
        await super().send(recipient, data)


async def _round(group: Group, pool, transports: dict[str, MemoryTransport], k: int):
    import asyncio

    from fedswarm.secagg.session import run_secure_aggregation

    updates = random_updates(k, N_VALUES, seed=41)
    weights = [1.0 + i for i in range(k)]
    tasks = [
        run_secure_aggregation(
            group.spec,
            group.signers[m],
            group.verify,
            updates[i],
            weights[i],
            transports.get(m) or group.network.transport(m),
            STREAMED,
            step_timeout_s=TIMEOUT,
            executor=pool,
        )
        for i, m in enumerate(group.members)
    ]
    results = list(await asyncio.gather(*tasks, return_exceptions=True))
    return updates, weights, results


def _resign(group: Group, data: bytes, index: int, count: int, round_: int | None = None) -> bytes:
    """The hostile member re-signs one of its own chunks with another index, count or round."""
    binding, step, sender = peek(data)
    message = decode_message(data, binding, data_recipient(data), group.verify)
    body = read_prefix(message.payload)[2]
    if round_ is not None:
        binding = dataclasses.replace(binding, round=round_)
    return encode_message(
        group.signers[sender],
        binding,
        step,
        message.recipient,
        message.context_hash,
        add_prefix(index, count, bytes(body)),
    )


def data_recipient(data: bytes) -> str:
    from fedswarm.secagg.messages import _parse

    return _parse(data).recipient


@pytest.mark.parametrize(
    ("name", "rewrite", "error", "counted"),
    [
        ("repeated", lambda g, c: [c[0], c[1], c[0], c[2], c[2]], ChunkOrderError, True),
        (
            "previous-round",
            lambda g, c: [_resign(g, c[0], 0, CHUNKS, g.spec.round - 1), *c],
            ReplayError,
            True,
        ),
        ("reordered", lambda g, c: [c[1], c[0], c[2]], ChunkOrderError, False),
        (
            "forged-count",
            lambda g, c: [_resign(g, c[0], 0, CHUNKS + 1), *c[1:]],
            ChunkCountError,
            False,
        ),
    ],
)
async def test_a_members_bad_chunks_never_corrupt_the_sum(name, rewrite, error, counted, pool):
    k = 5
    group = Group(k, group_id=f"chunks-{name}")
    a, _, member = _roles(group)
    tampering = Tampering(group, member, lambda chunks: rewrite(group, chunks))
    updates, weights, results = await _round(group, pool, {member: tampering}, k)
    by_member = dict(zip(group.members, results, strict=True))
    assert all(isinstance(r, AggregationResult) for r in results), results
    aggregator = by_member[a]
    assert isinstance(aggregator, AggregationResult)
    assert any(r.startswith(f"{error.__name__}:") for r in aggregator.rejected), aggregator.rejected
    survivors = list(group.members) if counted else [m for m in group.members if m != member]
    check_survivor_average(results, group, updates, weights, survivors, k)


async def test_a_member_that_stops_mid_upload_is_a_dropout_with_nothing_in_the_sum(pool):
    k = 5  # a group of 5 tolerates one member other than A and D dropping before CONFIRM
    group = Group(k, group_id="chunks-crash")
    _, _, member = _roles(group)
    crash = CrashMidUpload(group.network, member, None)
    updates, weights, results = await _round(group, pool, {member: crash}, k)
    by_member = dict(zip(group.members, results, strict=True))
    assert isinstance(by_member[member], MemberCrashed)
    sent = [peek(data)[1] for s, _, data in group.network.log if s == member]
    assert sent.count(Step.UPLOAD) == 1  # it did send part of its upload
    survivors = [m for m in group.members if m != member]
    for m in survivors:
        assert by_member[m].dropped == (member,)  # its mask key was recovered by Shamir
    check_survivor_average(results, group, updates, weights, survivors, k)


async def test_a_round_in_chunks_gives_exactly_the_average_of_a_round_in_one(pool):
    k = 4
    nearest = dataclasses.replace(SMALL_PARAMS, quantisation="nearest")  # deterministic
    updates = random_updates(k, N_VALUES, seed=43)
    weights = [1.0, 2.0, 3.0, 4.0]
    averages = []
    bounds = []
    for per_chunk in (1, 128):
        group = Group(k, group_id="chunks-vs-one")
        params = dataclasses.replace(nearest, stream_chunk_ciphertexts=per_chunk)
        results = await run_group(group, updates, weights, pool, params=params)
        assert all(isinstance(r, AggregationResult) for r in results), results
        steps = [peek(data)[1] for _, _, data in group.network.log]
        members_but_a_d = k - 2
        expected_chunks = CHUNKS if per_chunk == 1 else 1
        assert steps.count(Step.UPLOAD) == members_but_a_d * expected_chunks
        assert steps.count(Step.SUM) == expected_chunks
        assert steps.count(Step.RESULT) == (k - 1) * expected_chunks
        first = results[0]
        assert isinstance(first, AggregationResult)
        averages.append(first.average)
        bounds.append(first.error_bound)
    assert np.array_equal(averages[0], averages[1])
    expected = weighted_average(updates, weights)
    bound = bounds[0]
    assert np.max(np.abs(averages[0].astype(np.float64) - expected)) <= bound + 1e-6
