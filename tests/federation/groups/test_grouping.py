"""Group planning: partitions, sizes, determinism and mixing across rounds."""

from __future__ import annotations

import itertools
import math

import pytest
from fedswarm.federation.errors import GroupSizeError
from fedswarm.federation.groups.plan import (
    grid_shape,
    group_id,
    group_of,
    largest_group,
    leader_of,
    plan_groups,
)
from hypothesis import given, settings
from hypothesis import strategies as st

peer_ids = st.text(alphabet="abcdefghijkmnopqrstuvwxyz123456789", min_size=1, max_size=8)
views = st.lists(peer_ids, min_size=0, max_size=80, unique=True)


def _peers(n: int) -> list[str]:
    return [f"12D3Koo{i:03d}" for i in range(n)]


@settings(max_examples=150, deadline=None)
@given(view=views, round=st.integers(0, 50), group_size=st.integers(3, 8))
def test_partition_covers_every_member_once_in_groups_of_three_to_the_largest(
    view: list[str], round: int, group_size: int
) -> None:
    groups = plan_groups(view, round, group_size)
    if len(view) < 3:
        assert groups == []
        return
    flat = [peer for group in groups for peer in group]
    assert sorted(flat) == sorted(view)
    assert all(len(group) >= 3 for group in groups)
    assert all(len(group) <= largest_group(group_size) for group in groups)


@settings(max_examples=60, deadline=None)
@given(view=views, round=st.integers(0, 20), data=st.data())
def test_plan_ignores_member_order_and_duplicates(view: list[str], round: int, data) -> None:
    shuffled = data.draw(st.permutations(view))
    assert plan_groups(shuffled + shuffled[:3], round) == plan_groups(view, round)


def test_plan_is_deterministic_across_calls() -> None:
    members = _peers(50)
    assert plan_groups(members, 7, seed=b"fed") == plan_groups(list(members), 7, seed=b"fed")


def test_consecutive_rounds_use_different_partitions() -> None:
    members = _peers(64)
    plans = [plan_groups(members, round) for round in range(6)]
    for earlier, later in itertools.pairwise(plans):
        assert earlier != later


def test_seed_changes_the_plan() -> None:
    members = _peers(64)
    assert plan_groups(members, 0, seed=b"a") != plan_groups(members, 0, seed=b"b")


def test_each_epoch_places_peers_on_a_new_grid() -> None:
    members = _peers(16)  # 4x4 grid, two rounds per epoch
    assert plan_groups(members, 0) != plan_groups(members, 2)


@pytest.mark.parametrize("n", [3, 4])
def test_at_most_group_size_members_form_one_group_of_everyone(n: int) -> None:
    members = _peers(n)
    assert plan_groups(members, 5, group_size=4) == [tuple(members)]


@pytest.mark.parametrize("n", [0, 1, 2])
def test_fewer_than_three_members_form_no_group(n: int) -> None:
    assert plan_groups(_peers(n), 0) == []


def test_group_size_below_three_is_rejected() -> None:
    with pytest.raises(GroupSizeError):
        plan_groups(_peers(10), 0, group_size=2)


def test_negative_round_is_rejected() -> None:
    with pytest.raises(ValueError):
        plan_groups(_peers(10), -1)


@pytest.mark.parametrize(("n", "dims"), [(16, (4, 4)), (64, (4, 4, 4)), (256, (4, 4, 4, 4))])
def test_powers_of_the_group_size_get_a_perfect_grid(n: int, dims: tuple[int, ...]) -> None:
    shape = grid_shape(n, 4)
    assert shape.dims == dims
    assert shape.rounds_per_epoch == math.ceil(math.log(n, 4))
    assert all(len(group) == 4 for group in plan_groups(_peers(n), 1))


def test_one_grid_pass_brings_every_pair_of_peers_into_a_common_chain() -> None:
    """On a perfect grid, information from any peer reaches every peer within one epoch."""
    members = _peers(64)
    reached = {peer: {peer} for peer in members}
    for round in range(grid_shape(64, 4).rounds_per_epoch):
        for group in plan_groups(members, round):
            union = set().union(*(reached[peer] for peer in group))
            for peer in group:
                reached[peer] = set(union)
    assert all(reached[peer] == set(members) for peer in members)


def test_group_of_finds_the_peer_or_none() -> None:
    groups = plan_groups(_peers(16), 0)
    first = groups[0]
    assert group_of(first[1], groups) == first
    assert group_of("stranger", groups) is None


def test_group_id_is_stable_short_and_order_independent() -> None:
    assert group_id(3, ["b", "a", "c"]) == group_id(3, ["c", "b", "a"])
    assert len(group_id(3, ["a", "b", "c"])) == 16
    assert group_id(3, ["a", "b", "c"]) != group_id(4, ["a", "b", "c"])
    assert group_id(3, ["a", "b", "c"]) != group_id(3, ["a", "b", "d"])


def test_leader_is_the_lowest_peer_id() -> None:
    assert leader_of(("m", "c", "x")) == "c"
