"""Members dropping out before upload or during unmasking; too few survivors aborts."""

from __future__ import annotations

import time

import numpy as np
import pytest
from fedswarm.secagg.errors import (
    NotEnoughSurvivorsError,
    RoleUnavailableError,
    RoundAbortedError,
)
from fedswarm.secagg.messages import Step, peek_binding
from fedswarm.secagg.roles import assign_roles
from fedswarm.secagg.session import AggregationResult

from .conftest import FailsOneStep, Group, MemberCrashed, group_grid, random_updates
from .test_round_average import N_PARAMS, run_group, weighted_average

TIMEOUT = 1.5


def ordinary_members(group: Group) -> list[str]:
    """Members that are neither aggregator nor decryptor (those may drop safely)."""
    a, d = assign_roles(group.members, group.spec.round, group.spec.group_id)
    return [m for m in group.members if m not in (a, d)]


def check_survivor_average(results, group, updates, weights, survivors, k):
    idx = [group.members.index(s) for s in survivors]
    expected = weighted_average([updates[i] for i in idx], [weights[i] for i in idx])
    w_total = sum(weights[i] for i in idx)
    bound = group_grid(k, weights).error_bound(w_total)  # no survivor weighs more
    alive = [r for r in results if isinstance(r, AggregationResult)]
    assert alive
    for r in alive:
        assert r.survivors == tuple(sorted(survivors))
        assert r.total_weight == pytest.approx(w_total)
        assert np.max(np.abs(r.average.astype(np.float64) - expected)) <= bound + 1e-6
        assert np.array_equal(r.average, alive[0].average)


@pytest.mark.parametrize("n_drop", [1, 2])
async def test_dropouts_before_upload_give_exact_survivor_average(n_drop, pool):
    # t = 4; the witness quorum needs 3 of the 5 members other than A and D, so up to
    # 2 of them may drop
    k = 7
    group = Group(k)
    updates = random_updates(k, N_PARAMS, seed=n_drop)
    weights = [1.0] * k
    droppers = ordinary_members(group)[:n_drop]
    results = await run_group(
        group,
        updates,
        weights,
        pool,
        drop_at={m: int(Step.UPLOAD) for m in droppers},
        timeout=TIMEOUT,
    )
    for m, r in zip(group.members, results, strict=True):
        if m in droppers:
            assert isinstance(r, MemberCrashed)
        else:
            assert isinstance(r, AggregationResult), r
            assert set(r.dropped) == set(droppers)
    survivors = [m for m in group.members if m not in droppers]
    check_survivor_average(results, group, updates, weights, survivors, k)


async def test_in_a_group_of_four_an_ordinary_dropout_aborts_before_any_reveal(pool):
    """The price of the split-view defence: with A and D not counted, a group of four
    has two witnesses, and one of two is not more than half. Nothing is revealed."""
    group = Group(4)
    dropper = ordinary_members(group)[0]
    results = await run_group(group, random_updates(4, N_PARAMS, seed=4), [1.0] * 4, pool,
                              drop_at={dropper: int(Step.UPLOAD)}, timeout=TIMEOUT)
    for m, r in zip(group.members, results, strict=True):
        if m != dropper:
            assert isinstance(r, NotEnoughSurvivorsError), (m, r)
    assert Step.UNMASK not in [peek_binding(data)[1] for _, _, data in group.network.log]


async def test_survivor_dropping_during_unmasking_still_gives_average(pool):
    k = 8  # t = 5: two drop before upload, one more during unmasking, five remain
    group = Group(k)
    updates = random_updates(k, N_PARAMS, seed=11)
    weights = [float(i + 1) for i in range(k)]
    ordinary = ordinary_members(group)
    drop_at = {ordinary[0]: int(Step.UPLOAD), ordinary[1]: int(Step.UPLOAD)}
    drop_at[ordinary[2]] = int(Step.UNMASK)
    results = await run_group(group, updates, weights, pool, drop_at=drop_at, timeout=TIMEOUT)
    survivors = [m for m in group.members if m not in (ordinary[0], ordinary[1])]
    # the member that vanished while unmasking was in the sum, so it is a survivor
    check_survivor_average(results, group, updates, weights, survivors, k)


async def test_fewer_than_threshold_survivors_aborts_cleanly_for_everyone(pool):
    k = 5
    group = Group(k)
    updates = random_updates(k, N_PARAMS, seed=3)
    droppers = ordinary_members(group)  # 3 drop, leaving A and D: 2 < t = 3
    results = await run_group(
        group,
        updates,
        [1.0] * k,
        pool,
        drop_at={m: int(Step.UPLOAD) for m in droppers},
        timeout=TIMEOUT,
    )
    for m, r in zip(group.members, results, strict=True):
        if m in droppers:
            assert isinstance(r, MemberCrashed)
        else:
            assert isinstance(r, NotEnoughSurvivorsError), r


async def test_a_decryptor_that_never_joins_is_given_up_on_after_one_step_wait(pool):
    """The context is D's first act and waits on no one: the others give up after one
    step's wait, not the three that waits on A or D's later work get (issue #27: a
    decryptor that had given up on its group's final held the group 4.5 minutes)."""
    k = 4
    group = Group(k)
    _, decryptor = assign_roles(group.members, group.spec.round, group.spec.group_id)
    step_wait = 4.0
    started = time.monotonic()
    results = await run_group(group, random_updates(k, N_PARAMS, seed=5), [1.0] * k, pool,
                              drop_at={decryptor: int(Step.CONTEXT)}, timeout=step_wait)
    elapsed = time.monotonic() - started
    for m, r in zip(group.members, results, strict=True):
        if m == decryptor:
            assert isinstance(r, MemberCrashed)
        else:
            assert isinstance(r, RoleUnavailableError) and "no context" in str(r), r
    assert step_wait <= elapsed < 2 * step_wait  # three waits would be 12 s


async def test_an_aggregator_that_gives_up_tells_its_members_at_once(pool):
    """Issue #27: an aggregator whose copy of the decryptor's context was lost ended its
    own session after one step's wait without a word; its members, who had the context,
    waited through keys, shares and three steps for the survivor set (6 to 9 minutes
    among 32 daemons). Its ABORT, not bound to a context it never had, ends every wait."""
    k = 4
    group = Group(k)
    aggregator, decryptor = assign_roles(group.members, group.spec.round, group.spec.group_id)
    step_wait = 3.0
    updates = random_updates(k, N_PARAMS, seed=6)
    loses_context = {decryptor: lambda own: FailsOneStep(own, aggregator, Step.CONTEXT,
                                                         hang=False)}
    started = time.monotonic()
    results = await run_group(group, updates, [1.0] * k, pool, timeout=step_wait,
                              wrap=loses_context)
    elapsed = time.monotonic() - started
    for m, r in zip(group.members, results, strict=True):
        if m == aggregator:
            assert isinstance(r, RoleUnavailableError) and "no context" in str(r), r
        else:
            assert isinstance(r, RoundAbortedError), r
            assert "the aggregator gave up" in str(r)
    # one step's wait for the context at A, then its abort: not keys + shares + 3 steps
    assert step_wait <= elapsed < 2 * step_wait
