"""Bad local input is refused before anything is sent; foreign messages never end a round."""

from __future__ import annotations

import numpy as np
import pytest
from fedswarm.secagg.errors import (
    InvalidWeightError,
    MismatchedLengthsError,
    NonFiniteUpdateError,
    NotEnoughSurvivorsError,
    ParameterSecurityError,
    ReplayError,
    ShareRevealRefusedError,
    VectorShapeError,
)
from fedswarm.secagg.messages import RoundBinding, Step, encode_message
from fedswarm.secagg.params import SecAggParams
from fedswarm.secagg.payloads import MASK_KEY_SHARE, SEED_SHARE, ShareBundle
from fedswarm.secagg.roles import assign_roles
from fedswarm.secagg.session import AggregationResult, run_secure_aggregation
from fedswarm.secagg.shamir import split_secret
from fedswarm.secagg.shares import ShareVault

from .conftest import SMALL_PARAMS, Group, random_updates
from .test_round_average import N_PARAMS, run_group


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
async def test_non_finite_update_is_rejected_before_sending(bad, pool):
    group = Group(3)
    update = np.zeros(100, np.float32)
    update[17] = bad
    me = group.members[0]
    with pytest.raises(NonFiniteUpdateError):
        await run_secure_aggregation(
            group.spec,
            group.signers[me],
            group.verify,
            update,
            1.0,
            group.network.transport(me),
            SMALL_PARAMS,
            executor=pool,
        )
    assert group.network.log == []


@pytest.mark.parametrize("weight", [0.0, -1.0, float("nan"), 1e9])
async def test_bad_weight_is_rejected_before_sending(weight, pool):
    group = Group(3)
    me = group.members[0]
    with pytest.raises(InvalidWeightError):
        await run_secure_aggregation(
            group.spec,
            group.signers[me],
            group.verify,
            np.zeros(10, np.float32),
            weight,
            group.network.transport(me),
            SMALL_PARAMS,
            executor=pool,
        )
    assert group.network.log == []


async def test_empty_update_raises_vector_shape_error(pool):
    group = Group(3)
    me = group.members[0]
    with pytest.raises(VectorShapeError):
        await run_secure_aggregation(
            group.spec,
            group.signers[me],
            group.verify,
            np.zeros(0, np.float32),
            1.0,
            group.network.transport(me),
            SMALL_PARAMS,
            executor=pool,
        )


async def test_group_of_two_is_refused(pool):
    group = Group(2)
    me = group.members[0]
    with pytest.raises(ParameterSecurityError):
        await run_secure_aggregation(
            group.spec,
            group.signers[me],
            group.verify,
            np.zeros(10, np.float32),
            1.0,
            group.network.transport(me),
            SMALL_PARAMS,
            executor=pool,
        )


async def test_foreign_round_message_is_rejected_and_the_round_completes(pool):
    group = Group(3)
    sender, victim = group.members[0], group.members[1]
    stale = encode_message(
        group.signers[sender],
        RoundBinding("fed-test", "g-1", 6),
        Step.KEYS,
        victim,
        bytes(32),
        b"old",
    )
    await group.network.queues[victim].put((sender, stale))
    updates = random_updates(3, N_PARAMS)
    results = await run_group(group, updates, [1.0] * 3, pool)
    victim_result = results[1]
    assert isinstance(victim_result, AggregationResult), victim_result
    assert any(r.startswith(ReplayError.__name__) for r in victim_result.rejected)
    assert all(isinstance(r, AggregationResult) for r in results)


def test_insecure_parameters_are_refused():
    with pytest.raises(ParameterSecurityError):
        SecAggParams(coeff_mod_bit_sizes=(60, 60)).validate()  # 120 > 109 bits at N=4096
    with pytest.raises(ParameterSecurityError):
        SecAggParams(poly_modulus_degree=2048).validate()
    assert SecAggParams().security_bits() == 128
    SecAggParams().validate()


def _vault_with(owners: list[str]) -> ShareVault:
    vault = ShareVault()
    for owner in owners:
        key = split_secret(bytes(32), 3, 2)[0]
        seed = split_secret(bytes([1]) * 32, 3, 2)[0]
        vault.store(owner, ShareBundle(key, seed))
    return vault


def test_member_refuses_to_reveal_both_shares_of_one_peer():
    vault = _vault_with(["a", "b", "c"])
    with pytest.raises(ShareRevealRefusedError):
        vault.reveal(survivors=["a", "b"], dropped=["b"])


def test_member_refuses_the_other_share_after_a_first_reveal():
    vault = _vault_with(["a", "b", "c"])
    first = vault.reveal(survivors=["a", "b"], dropped=["c"])
    assert {(s.owner, s.kind) for s in first} == {
        ("a", SEED_SHARE),
        ("b", SEED_SHARE),
        ("c", MASK_KEY_SHARE),
    }
    with pytest.raises(ShareRevealRefusedError):
        vault.reveal(survivors=["a"], dropped=["b"])
    # the refused request revealed nothing; repeating the first request is fine
    assert vault.reveal(survivors=["a", "b"], dropped=["c"]) == first


async def test_members_of_another_vector_length_are_named_as_such(pool):
    """Two of four members send keys for a longer vector: nobody has the 3 keys a sum
    needs, and the error says why (a setting that changes the vector), where members that
    merely sent nothing get the plain "only N sent keys" (no setting to go looking for)."""
    group = Group(4)
    short, long_ = random_updates(2, N_PARAMS, seed=1), random_updates(2, N_PARAMS + 8, seed=2)
    results = await run_group(group, [*short, *long_], [1.0] * 4, pool, timeout=3.0)
    assert all(isinstance(r, MismatchedLengthsError) for r in results), results
    assert "2 sent keys for another vector length" in str(results[0])

    # a fresh group: the first session's aborts must not reach the second, which the
    # product never runs under the same round and group id
    group = Group(4)
    roles = assign_roles(group.members, group.spec.round, group.spec.group_id)
    leaving = [m for m in group.members if m not in roles][:2]
    results = await run_group(group, random_updates(4, N_PARAMS), [1.0] * 4, pool,
                              drop_at={m: Step.KEYS for m in leaving}, timeout=3.0)
    stayed = [r for m, r in zip(group.members, results, strict=True) if m not in leaving]
    assert all(isinstance(r, NotEnoughSurvivorsError) for r in stayed), stayed
    assert not any(isinstance(r, MismatchedLengthsError) for r in stayed), stayed
