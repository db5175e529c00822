"""Planning for large federations (issue #27): perfect grids for powers of g, a plan
memo that cannot leak between callers, and the daemon's agreement and the gossip
benchmark planning the very same groups."""

from __future__ import annotations

import hashlib
import json

import pytest
from fedswarm.federation.groups.agreement import GroupAgreement
from fedswarm.federation.groups.plan import grid_shape, group_of, plan_groups, planned_group
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.gossip import SimulationConfig, _run_agreement, log_rounds, round_bound, simulate


def _peers(n: int) -> list[str]:
    return [f"12D3KooW{i:05d}" for i in range(n)]


@pytest.mark.parametrize(("n", "dims"), [(1024, (4,) * 5), (4096, (4,) * 6)])
def test_large_powers_of_the_group_size_get_a_perfect_grid(n: int, dims: tuple[int, ...]) -> None:
    """5x6x6x6 and 4x5x6x6x6 (56 and 224 empty cells) broke one-epoch exact averaging."""
    assert grid_shape(n, 4).dims == dims
    assert all(len(group) == 4 for group in plan_groups(_peers(n), 3))


@pytest.mark.parametrize("group_size", [3, 4, 5, 8])
def test_grid_never_takes_more_rounds_per_epoch_than_ceil_log_g_n(group_size: int) -> None:
    for n in range(group_size + 3, 5000, 7):
        assert grid_shape(n, group_size).rounds_per_epoch <= log_rounds(n, group_size), n


def test_an_extra_dimension_is_used_only_when_it_leaves_fewer_empty_cells() -> None:
    assert grid_shape(100, 4).dims == (4, 5, 5)  # perfect in 3 dimensions: no 4th
    assert grid_shape(36, 4).dims == (6, 6)  # perfect in 2: no 3rd
    assert grid_shape(1023, 4).dims == (4, 4, 4, 4, 4)  # 1 empty instead of 57 (5x6x6x6)
    assert grid_shape(1000, 4).dims == (4, 5, 5, 5, 2)  # perfect with a paired axis
    # exact in 3 or 4 dimensions with sides of 3, but groups of 3 stop at one straggler
    assert grid_shape(27, 4).dims == (5, 6)
    assert grid_shape(81, 4).dims == (3, 5, 6)


def test_plans_of_sizes_whose_grid_did_not_change_are_those_of_the_previous_planner() -> None:
    """Daemons of earlier releases plan these sizes identically, so they can still agree
    on groups with this one. The digest was computed with this planner, the one before
    the paired axis (c01fc29) and the one before issue #27's grid change (identical for
    every N < 400 whose grid is unchanged, g = 4, rounds 0..5). 8, 10 and 32 members
    plan differently since the paired axis (next test)."""
    plans = [
        [plan_groups([f"12D3KooW{i:05d}" for i in range(n)], round, seed=b"fed")
         for round in range(6)]
        for n in [*range(3, 8), 9, *range(11, 26), 36, 64, 100, 256]
    ]
    digest = hashlib.sha256(json.dumps(plans).encode()).hexdigest()
    assert digest == "b8b5dbdc2c2b39c9e97b1fe2f28fab599f9c634aef9f99f3d4051c34851f53fa"


@pytest.mark.parametrize(
    ("n", "dims"),
    [(8, (4, 2)), (32, (4, 4, 2)), (128, (4, 4, 4, 2)), (512, (4, 4, 4, 4, 2))],
)
def test_powers_of_two_reach_the_exact_average_in_one_pass_over_a_paired_axis(
    n: int, dims: tuple[int, ...]
) -> None:
    """Every plain grid for these sizes has empty cells (8 was 3x3 and took 5 rounds to
    1e-3, 128 was 4x6x6 and took 7); a last axis of two, whose lines are grouped two at a
    time, makes the grid perfect and the pass exact."""
    assert grid_shape(n, 4).dims == dims
    last_axis = plan_groups(_peers(n), len(dims) - 1)
    assert all(len(group) == 4 for group in last_axis)
    result = simulate(SimulationConfig(n_peers=n, rounds=len(dims), dim=8, agreement="stand-in"))
    assert result.deviations[-1] < 1e-6
    assert result.rounds_to(1e-3) == log_rounds(n, 4)


def test_a_paired_axis_is_used_only_where_every_plain_grid_has_empty_cells() -> None:
    assert grid_shape(12, 4).dims == (3, 4)  # perfect without it
    assert grid_shape(24, 4).dims == (4, 6)
    assert grid_shape(12, 5).dims == (3, 4)
    assert grid_shape(10, 4).dims == (5, 2)  # was 3x4 with two empty cells


@pytest.mark.parametrize("group_size", [3, 4, 5, 8])
def test_past_g_plus_2_members_every_round_has_several_groups(group_size: int) -> None:
    """A paired axis of three pairs would be one group of everyone (6 peers at g = 3):
    that is what N <= g + 2 gets, not a federation that asked for groups."""
    assert grid_shape(6, 3).dims == (3, 3)
    for n in range(group_size + 3, 200):
        for round in range(grid_shape(n, group_size).rounds_per_epoch):
            assert len(plan_groups(_peers(n), round, group_size)) >= 2, (n, round)


def test_log_rounds_is_exact_at_powers_where_float_log_is_not() -> None:
    assert [log_rounds(n, 4) for n in (16, 17, 64, 4096, 4097)] == [2, 3, 3, 6, 7]
    assert log_rounds(243, 3) == 5
    assert round_bound(4096, 4, 0.0) == 8 and round_bound(4096, 4, 0.1) == 16
    assert round_bound(4096, 4, 0.3) is None


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 300), round=st.integers(0, 12), seed=st.binary(max_size=4))
def test_planned_group_is_the_members_group_in_the_plan(n: int, round: int, seed: bytes) -> None:
    members = _peers(n)
    plan = plan_groups(members, round, seed=seed)
    for peer in members[:20]:
        assert planned_group(peer, reversed(members), round, seed=seed) == group_of(peer, plan)
    assert planned_group("stranger", members, round, seed=seed) is None


def test_a_caller_mutating_its_plan_does_not_change_the_next_callers_plan() -> None:
    members = _peers(64)
    first = plan_groups(members, 2)
    expected = list(first)
    first.clear()
    assert plan_groups(members, 2) == expected


@pytest.mark.parametrize("n", [64, 1024])
def test_daemon_agreement_and_gossip_bench_form_exactly_the_planned_groups(n: int) -> None:
    """With every peer up, the bench's agreement run forms the plan, group for group."""
    peers = _peers(n)
    for round in (0, 1, log_rounds(n, 4)):  # two axes and the next epoch's grid
        formed = _run_agreement(peers, set(peers), round, 4)
        assert [group.members for group in formed] == plan_groups(peers, round)
        me = peers[n // 3]
        assert GroupAgreement(me, round, peers, 0.0).planned == group_of(
            me, plan_groups(peers, round))


def test_1024_peers_reach_one_in_a_thousand_within_the_bound_without_dropout() -> None:
    bound = round_bound(1024, 4, 0.0)
    assert bound is not None
    result = simulate(SimulationConfig(1024, 4, rounds=bound, dim=8, seed=1,
                                       stop_at_target=True))
    assert result.rounds_to(1e-3) == 5  # one pass over the 4x4x4x4x4 grid


@pytest.mark.slow
def test_4096_peers_reach_one_in_a_thousand_within_the_bound_without_dropout() -> None:
    result = simulate(SimulationConfig(4096, 4, rounds=8, dim=4, seed=1, stop_at_target=True))
    assert result.rounds_to(1e-3) == 6
