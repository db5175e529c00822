"""Nothing is revealed with fewer than 3 contributors; a garbage SUM aborts D, never crashes it.

issue #19: a member sorting lowest invited a victim to a group padded with a made-up
peer and recovered the victim's update (the "only 2 of 3" abort came after the result);
an aggregator sending D a SUM of malformed ciphertexts made TenSEAL's ValueError end
D's daemon.
"""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest
from fedswarm.secagg.chunks import add_prefix, read_prefix
from fedswarm.secagg.errors import (
    CiphertextLayoutError,
    NotEnoughSurvivorsError,
    ProtocolViolationError,
    SecAggError,
    TooFewContributorsError,
)
from fedswarm.secagg.messages import Step, decode_message, encode_message, peek_binding
from fedswarm.secagg.payloads import KeysPayload, SumPayload
from fedswarm.secagg.roles import assign_roles
from fedswarm.secagg.session import MIN_CONTRIBUTORS, AggregationResult, run_secure_aggregation

from .conftest import SMALL_PARAMS, Group, MemberCrashed, MemoryTransport, random_updates
from .test_round_average import N_PARAMS, run_group

TIMEOUT = 1.0


def steps_sent(group: Group) -> list[Step]:
    return [peek_binding(data)[1] for _, _, data in group.network.log]


def roles(group: Group) -> tuple[str, str, list[str]]:
    a, d = assign_roles(group.members, group.spec.round, group.spec.group_id)
    return a, d, [m for m in group.members if m not in (a, d)]


def test_the_floor_is_three() -> None:
    assert MIN_CONTRIBUTORS == 3


async def test_two_uploads_in_a_group_of_three_send_no_unmask_share(pool) -> None:
    """k = 3 has t = 2: A and D alone reached the threshold and used to unmask."""
    group = Group(3)
    a, _, (ordinary,) = roles(group)
    results = await run_group(
        group, random_updates(3, N_PARAMS), [1.0] * 3, pool,
        drop_at={ordinary: int(Step.UPLOAD)}, timeout=TIMEOUT,
    )
    for member, result in zip(group.members, results, strict=True):
        if member == ordinary:
            assert isinstance(result, MemberCrashed)
        elif member == a:
            assert isinstance(result, TooFewContributorsError), result
        else:  # D hears A's signed abort
            assert isinstance(result, NotEnoughSurvivorsError), result
    sent = steps_sent(group)
    assert Step.UNMASK not in sent and Step.RESULT not in sent
    assert Step.SUM not in sent  # A stops before handing D anything to decrypt


async def test_phantom_third_member_gets_the_victim_nothing(pool) -> None:
    """A and D run; the third member of the group never exists."""
    group = Group(3)
    a, d, _ = roles(group)
    updates = random_updates(3, N_PARAMS)
    live = [a, d]
    results = await asyncio.gather(
        *(
            run_secure_aggregation(
                group.spec, group.signers[m], group.verify, updates[group.members.index(m)],
                1.0, group.network.transport(m), SMALL_PARAMS, step_timeout_s=TIMEOUT,
                executor=pool,
            )
            for m in live
        ),
        return_exceptions=True,
    )
    for result in results:
        assert isinstance(result, TooFewContributorsError), result
    sent = steps_sent(group)
    assert not {Step.UPLOAD, Step.SUM, Step.UNMASK, Step.RESULT} & set(sent), sent


class HostileAggregatorTransport(MemoryTransport):
    """A's transport, replacing the SUM it sends D by one of malformed ciphertext chunks."""

    def __init__(self, group: Group, me: str, garbage: str) -> None:
        super().__init__(group.network, me, None)
        self.group = group
        self.garbage = garbage

    async def send(self, recipient: str, data: bytes) -> None:
        binding, step, _ = peek_binding(data)
        if step is Step.SUM:
            message = decode_message(data, binding, recipient, self.group.verify)
            index, count, body = read_prefix(message.payload)  # one streamed SUM chunk
            honest = SumPayload.decode(body, SMALL_PARAMS.slot_count)
            chunks = [self._spoil(chunk) for chunk in honest.chunks]
            payload = add_prefix(index, count, SumPayload(
                honest.survivors_digest, honest.n_values, chunks).encode())
            data = encode_message(
                self.group.signers[self.me], binding, step, recipient,
                message.context_hash, payload,
            )
        await super().send(recipient, data)

    def _spoil(self, chunk: bytes) -> bytes:
        if self.garbage == "truncated":
            return bytes(chunk[: len(chunk) // 2])
        if self.garbage == "random":
            return os.urandom(len(chunk))
        return b""


@pytest.mark.parametrize("garbage", ["truncated", "random", "empty"])
async def test_garbage_sum_makes_the_decryptor_abort_with_a_secagg_error(garbage, pool) -> None:
    group = Group(4)
    a, d, _ = roles(group)
    updates = random_updates(4, N_PARAMS, seed=5)
    tasks = []
    for i, member in enumerate(group.members):
        transport = (
            HostileAggregatorTransport(group, member, garbage)
            if member == a else group.network.transport(member)
        )
        tasks.append(run_secure_aggregation(
            group.spec, group.signers[member], group.verify, updates[i], 1.0, transport,
            SMALL_PARAMS, step_timeout_s=TIMEOUT, executor=pool,
        ))
    results = dict(zip(group.members, await asyncio.gather(*tasks, return_exceptions=True),
                       strict=True))
    # was a bare ValueError from TenSEAL's parser, raised out of D's session
    assert isinstance(results[d], SecAggError), repr(results[d])
    if garbage != "empty":  # an empty chunk loads as an empty vector: a shape error
        assert isinstance(results[d], CiphertextLayoutError), repr(results[d])
    for member, result in results.items():
        assert isinstance(result, SecAggError), (member, repr(result))
        assert not isinstance(result, AggregationResult)
    assert Step.RESULT not in steps_sent(group)
    # D says so at once (a signed ABORT), so the others end with it instead of waiting
    # three step timeouts for a RESULT and drifting a round apart
    for member in group.members:
        if member not in (a, d):
            assert "the decryptor could not finish" in str(results[member]), results[member]


async def test_low_order_x25519_key_is_refused_not_a_crash(pool) -> None:
    """An all-zero public key makes libsodium fail; the sender is dropped, the round goes on."""
    group = Group(4)
    _, _, ordinary = roles(group)
    hostile = ordinary[0]

    class ZeroKeys(MemoryTransport):
        async def send(self, recipient: str, data: bytes) -> None:
            binding, step, _ = peek_binding(data)
            if step is Step.KEYS:
                message = decode_message(data, binding, recipient, group.verify)
                keys = KeysPayload.decode(message.payload, SMALL_PARAMS.packed)
                zero = KeysPayload(bytes(32), bytes(32), keys.seed_commitment, keys.n_values,
                                   keys.weight_class, keys.range_shift)
                data = encode_message(group.signers[self.me], binding, step, recipient,
                                      message.context_hash, zero.encode())
            await super().send(recipient, data)

    updates = random_updates(4, N_PARAMS, seed=9)
    tasks = []
    for i, member in enumerate(group.members):
        transport = (ZeroKeys(group.network, member, None) if member == hostile
                     else group.network.transport(member))
        tasks.append(run_secure_aggregation(
            group.spec, group.signers[member], group.verify, updates[i], 1.0, transport,
            SMALL_PARAMS, step_timeout_s=TIMEOUT, executor=pool,
        ))
    results = dict(zip(group.members, await asyncio.gather(*tasks, return_exceptions=True),
                       strict=True))
    for member, result in results.items():
        if member == hostile:
            continue  # it cannot finish with keys nobody accepted; how it fails is its own
        assert isinstance(result, AggregationResult), (member, repr(result))
        assert hostile not in result.survivors
        assert any(ProtocolViolationError.__name__ in r for r in result.rejected)
        expected = np.mean([updates[group.members.index(m)] for m in result.survivors], axis=0)
        assert np.max(np.abs(result.average - expected)) < 1e-3
