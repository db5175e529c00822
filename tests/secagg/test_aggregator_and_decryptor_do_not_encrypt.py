"""A adds its own contribution as a plaintext and D never uploads; the average stays exact."""

from __future__ import annotations

import asyncio
import hashlib

import numpy as np
import pytest
import tenseal as ts
from fedswarm.secagg.accumulator import CiphertextAccumulator
from fedswarm.secagg.chunks import add_prefix, read_prefix
from fedswarm.secagg.ciphertext_raw import CiphertextLayout
from fedswarm.secagg.errors import SecAggError, SurvivorSetMismatchError, VectorShapeError
from fedswarm.secagg.he import create_context, decrypt_chunks, load_public_context
from fedswarm.secagg.messages import Step, decode_message, encode_message, peek_binding
from fedswarm.secagg.payloads import DigestPayload, SumPayload, SurvivorsPayload
from fedswarm.secagg.plain_add import add_plain_words
from fedswarm.secagg.roles import assign_roles
from fedswarm.secagg.session import AggregationResult, run_secure_aggregation

from .conftest import SMALL_PARAMS, Group, MemberCrashed, MemoryTransport, random_updates
from .test_dropouts import TIMEOUT, check_survivor_average, ordinary_members
from .test_round_average import N_PARAMS, run_group


def uploads_by_sender(group: Group) -> dict[str, list[str]]:
    sent: dict[str, list[str]] = {}
    for sender, recipient, data in group.network.log:
        if peek_binding(data)[1] is Step.UPLOAD:
            sent.setdefault(sender, []).append(recipient)
    return sent


async def test_only_ordinary_members_upload_and_only_to_the_aggregator(pool):
    k = 6
    group = Group(k)
    a, d = assign_roles(group.members, group.spec.round, group.spec.group_id)
    results = await run_group(group, random_updates(k, N_PARAMS, seed=5), [1.0] * k, pool)
    assert all(isinstance(r, AggregationResult) for r in results), results
    sent = uploads_by_sender(group)
    assert d not in sent and a not in sent
    assert sorted(sent) == sorted(ordinary_members(group))
    assert all(recipients == [a] for recipients in sent.values())
    for r in results:
        assert isinstance(r, AggregationResult)
        assert r.survivors == group.members  # A and D are survivors without uploading


async def test_aggregator_and_decryptor_run_no_encrypt_job(pool):
    k = 4
    group = Group(k)
    a, d = assign_roles(group.members, group.spec.round, group.spec.group_id)
    results = await run_group(group, random_updates(k, N_PARAMS, seed=6), [1.0] * k, pool)
    by_member = dict(zip(group.members, results, strict=True))
    for m, r in by_member.items():
        assert isinstance(r, AggregationResult), r
        parts = set(r.timings)
        if m == a:
            assert "plain_job_cpu_s" in parts and "encrypt_job_cpu_s" not in parts
        elif m == d:
            assert "mask_job_cpu_s" in parts and "encrypt_job_cpu_s" not in parts
        else:
            assert "encrypt_job_cpu_s" in parts and "plain_job_cpu_s" not in parts


@pytest.mark.parametrize("k", [5, 6])
async def test_average_is_exact_when_an_ordinary_member_drops(k, pool):
    # k = 4 tolerates no ordinary dropout any more: see test_dropouts.py
    # k = 3 used to run with only A and D left (a sum holding no upload); that now aborts
    # before anything is revealed (test_hostile_sum_and_too_few_contributors.py)
    group = Group(k, round_=k)
    updates = random_updates(k, N_PARAMS, seed=20 + k)
    weights = [float(i + 2) for i in range(k)]
    gone = ordinary_members(group)[0]
    results = await run_group(
        group, updates, weights, pool, drop_at={gone: int(Step.UPLOAD)}, timeout=TIMEOUT
    )
    a, d = assign_roles(group.members, group.spec.round, group.spec.group_id)
    assert isinstance(results[group.members.index(gone)], MemberCrashed)
    survivors = [m for m in group.members if m != gone]
    assert a in survivors and d in survivors
    check_survivor_average(results, group, updates, weights, survivors, k)


def test_plain_words_decrypt_to_ciphertext_plus_plaintext_exactly():
    keys = create_context(SMALL_PARAMS)
    context = load_public_context(keys.public_context)
    layout = CiphertextLayout.for_context(context)
    slots = SMALL_PARAMS.slot_count
    n = 2 * slots + 17  # two full chunks and a short last one
    rng = np.random.default_rng(9)
    t = keys.plain_modulus
    x = rng.integers(0, t, n, dtype=np.int64)
    own = rng.integers(0, t, n, dtype=np.int64)
    own[:3] = (0, 1, t - 1)
    encrypted = [
        ts.bfv_vector(context, ts.plain_tensor(x[i : i + slots], dtype="int")).serialize()
        for i in range(0, n, slots)
    ]
    accumulator = CiphertextAccumulator(keys.public_context, n, slots)
    accumulator.add(encrypted)
    accumulator.add_plain(add_plain_words(context, layout, own, slots))
    summed = decrypt_chunks(keys.secret_context, accumulator.serialise(), n, t)
    assert np.array_equal(summed, (x + own) % t)
    assert accumulator.count == 1 and accumulator.plain_count == 1


def test_plain_words_alone_decrypt_to_the_plaintext():
    keys = create_context(SMALL_PARAMS)
    context = load_public_context(keys.public_context)
    layout = CiphertextLayout.for_context(context)
    n = SMALL_PARAMS.slot_count + 5
    own = np.random.default_rng(10).integers(0, keys.plain_modulus, n, dtype=np.int64)
    accumulator = CiphertextAccumulator(keys.public_context, n, SMALL_PARAMS.slot_count)
    accumulator.add_plain(add_plain_words(context, layout, own, SMALL_PARAMS.slot_count))
    summed = decrypt_chunks(keys.secret_context, accumulator.serialise(), n, keys.plain_modulus)
    assert np.array_equal(summed, own)


def test_plain_rows_of_the_wrong_shape_are_refused_before_anything_is_added():
    keys = create_context(SMALL_PARAMS)
    n = SMALL_PARAMS.slot_count + 5
    accumulator = CiphertextAccumulator(keys.public_context, n, SMALL_PARAMS.slot_count)
    with pytest.raises(VectorShapeError):
        accumulator.add_plain(np.zeros((1, SMALL_PARAMS.slot_count), dtype=np.uint64))
    with pytest.raises(VectorShapeError):
        accumulator.add_plain(np.zeros((2, SMALL_PARAMS.slot_count), dtype=np.int64))
    assert accumulator.plain_count == 0


class LeaveOutDecryptor(MemoryTransport):
    """An aggregator that leaves D out of the survivor set (D never uploads, so a lazy or
    hostile A might "forget" it) and stays consistent: it re-signs the survivor set, its
    own CONFIRM and the SUM's binding with the forged set, so only the new check is left
    to notice.  The test drops nobody, so the honest survivor set is every member."""

    def __init__(self, group: Group, me: str, decryptor: str) -> None:
        super().__init__(group.network, me, None)
        self.group = group
        others = tuple(p for p in group.members if p != decryptor)
        self.forged = SurvivorsPayload(others, group.members).encode()
        self.digest = hashlib.sha256(self.forged).digest()

    async def send(self, recipient: str, data: bytes) -> None:
        binding, step, _ = peek_binding(data)
        if step in (Step.SURVIVORS, Step.CONFIRM, Step.SUM):
            message = decode_message(data, binding, recipient, self.group.verify)
            if step is Step.SURVIVORS:
                assert SurvivorsPayload.decode(message.payload).survivors == self.group.members
                payload = self.forged
            elif step is Step.CONFIRM:
                payload = DigestPayload(self.digest).encode()
            else:
                index, count, body = read_prefix(message.payload)  # a streamed SUM chunk
                summed = SumPayload.decode_chunk(body, 1)
                payload = bytes(add_prefix(index, count, SumPayload(
                    self.digest, summed.n_values, summed.chunks).encode()))
            data = encode_message(
                self.group.signers[self.me],
                binding,
                step,
                recipient,
                message.context_hash,
                payload,
            )
        await super().send(recipient, data)


async def test_members_refuse_a_survivor_set_without_the_decryptor(pool):
    k = 4
    group = Group(k)
    a, d = assign_roles(group.members, group.spec.round, group.spec.group_id)
    tasks = [
        run_secure_aggregation(
            group.spec,
            group.signers[m],
            group.verify,
            update,
            1.0,
            LeaveOutDecryptor(group, m, d) if m == a else group.network.transport(m),
            SMALL_PARAMS,
            step_timeout_s=TIMEOUT,
            executor=pool,
        )
        for m, update in zip(group.members, random_updates(k, N_PARAMS, seed=30), strict=True)
    ]
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    results = dict(zip(group.members, outcomes, strict=True))
    for m, r in results.items():
        if m != a:
            assert isinstance(r, SurvivorSetMismatchError), (m, r)
    assert isinstance(results[a], SecAggError)
    steps = {peek_binding(data)[1] for _, _, data in group.network.log}
    assert Step.UNMASK not in steps  # no share was revealed
