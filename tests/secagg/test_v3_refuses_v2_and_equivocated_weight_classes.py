"""v3 meets v2 and a member who tells peers different weight classes.

A v3 member must say which protocol a v2 decryptor runs (not just "other parameters"),
and a member who equivocates its weight class must not get a quietly rescaled average
past the group: the class is bound into every mask key, so honest members who saw
different classes hold masks that do not cancel.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from fedswarm.secagg.errors import ContextMismatchError, SecAggError
from fedswarm.secagg.messages import Step, decode_message, encode_message, peek_binding
from fedswarm.secagg.params import PROTOCOL_V2, SecAggParams
from fedswarm.secagg.payloads import KeysPayload
from fedswarm.secagg.quantise import QuantisationGrid, weight_class
from fedswarm.secagg.roles import assign_roles
from fedswarm.secagg.session import AggregationResult, run_secure_aggregation

from .conftest import Group, MemoryTransport, random_updates
from .test_round_average import N_PARAMS, weighted_average

V3 = SecAggParams.v3()


def v3_grid(k: int, weights: list[float]) -> QuantisationGrid:
    """The v3 grid of a full-range round (these tests run v3 whatever the suite runs)."""
    return QuantisationGrid.for_group(V3, k, max(weight_class(w, V3) for w in weights))


async def test_a_v3_member_names_the_v2_protocol_of_its_decryptor(pool) -> None:
    group = Group(3)
    _, decryptor = assign_roles(group.members, group.spec.round, group.spec.group_id)
    updates = random_updates(3, N_PARAMS)
    tasks = [
        run_secure_aggregation(
            group.spec, group.signers[m], group.verify, updates[i], 1.0,
            group.network.transport(m), SecAggParams() if m == decryptor else V3,
            step_timeout_s=1.0, executor=pool)
        for i, m in enumerate(group.members)
    ]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for member, result in zip(group.members, results, strict=True):
        if member == decryptor:
            assert isinstance(result, SecAggError)
            continue
        assert isinstance(result, ContextMismatchError), result
        assert PROTOCOL_V2 in str(result) and V3.protocol in str(result)


async def test_an_equivocated_weight_class_breaks_the_sum_instead_of_rescaling_it(pool) -> None:
    group = Group(5)
    a, d = assign_roles(group.members, group.spec.round, group.spec.group_id)
    hostile = next(m for m in group.members if m not in (a, d))
    fooled = sorted(m for m in group.members if m != hostile)[:2]

    class TwoFacedKeys(MemoryTransport):
        async def send(self, recipient: str, data: bytes) -> None:
            binding, step, _ = peek_binding(data)
            if step is Step.KEYS and recipient in fooled:
                message = decode_message(data, binding, recipient, group.verify)
                keys = KeysPayload.decode(message.payload, packed=True)
                assert keys.weight_class is not None
                louder = KeysPayload(keys.share_public_key, keys.mask_public_key,
                                     keys.seed_commitment, keys.n_values, keys.weight_class + 3,
                                     keys.range_shift)
                data = encode_message(group.signers[self.me], binding, step, recipient,
                                      message.context_hash, louder.encode())
            await super().send(recipient, data)

    updates = random_updates(5, N_PARAMS, seed=4)
    weights = [1.0] * 5
    tasks = [
        run_secure_aggregation(
            group.spec, group.signers[m], group.verify, updates[i], weights[i],
            TwoFacedKeys(group.network, m, None) if m == hostile else group.network.transport(m),
            V3, step_timeout_s=2.0, executor=pool)
        for i, m in enumerate(group.members)
    ]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    expected = weighted_average(updates, weights)
    bound = v3_grid(5, weights).error_bound(sum(weights))
    finished = [r for r in results if isinstance(r, AggregationResult)]
    for result in results:
        assert isinstance(result, AggregationResult | SecAggError), result
    for result in finished:
        error = np.max(np.abs(result.average.astype(np.float64) - expected))
        assert error > 100 * bound, "a rescaled average slipped through"


async def test_the_same_round_without_equivocation_is_accurate(pool) -> None:
    """Control for the test above: the same group and weights give an accurate average."""
    group = Group(5)
    updates = random_updates(5, N_PARAMS, seed=4)
    weights = [1.0] * 5
    results = await asyncio.gather(*(
        run_secure_aggregation(
            group.spec, group.signers[m], group.verify, updates[i], weights[i],
            group.network.transport(m), V3, step_timeout_s=2.0, executor=pool)
        for i, m in enumerate(group.members)))
    bound = v3_grid(5, weights).error_bound(sum(weights))
    expected = weighted_average(updates, weights)
    for result in results:
        assert np.max(np.abs(result.average.astype(np.float64) - expected)) <= bound + 1e-6


@pytest.mark.parametrize(("weight_class", "shift", "what"),
                         [(23, 0, "weight class"), (255, 0, "weight class"),
                          (10, 25, "range shift"), (10, 255, "range shift")])
def test_a_class_or_shift_out_of_range_is_a_protocol_violation(
    weight_class: int, shift: int, what: str
) -> None:
    from fedswarm.secagg.errors import ProtocolViolationError
    from fedswarm.secagg.session import _decode_keys

    payload = KeysPayload(bytes(32), bytes(32), bytes(32), 10, weight_class, shift).encode()
    with pytest.raises(ProtocolViolationError, match=what):
        _decode_keys(payload, V3, "peer-x")


async def test_small_updates_get_a_finer_grid_and_stay_within_it(pool) -> None:
    """Updates within +-0.06 publish range shift 4: the round's bound is 16x v3's default."""
    group = Group(4)
    rng = np.random.default_rng(12)
    updates = [rng.uniform(-0.06, 0.06, N_PARAMS).astype(np.float32) for _ in range(4)]
    weights = [1.0, 2.0, 3.0, 4.0]
    results = await asyncio.gather(*(
        run_secure_aggregation(
            group.spec, group.signers[m], group.verify, updates[i], weights[i],
            group.network.transport(m), V3, step_timeout_s=2.0, executor=pool)
        for i, m in enumerate(group.members)))
    full_range = v3_grid(4, weights).error_bound(sum(weights))
    expected = weighted_average(updates, weights)
    for result in results:
        assert result.error_bound == pytest.approx(full_range / 16)
        assert np.max(np.abs(result.average.astype(np.float64) - expected)) <= result.error_bound
