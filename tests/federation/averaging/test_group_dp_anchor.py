"""A member's group-level DP: the anchor is always a release, spends persist first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fedswarm.federation.averaging.group_dp import (
    GroupBudgetSpentError,
    GroupPrivacy,
    group_dp_params,
    planned_noise_multiplier,
)
from fedswarm.learning.group_privacy import GroupBudget
from fedswarm.secagg.distributed_dp import GroupNoise
from fedswarm.secagg.params import PROTOCOL_V3
from fedswarm.secagg.quantise import QuantisationGrid

NOISE = GroupNoise(noise_multiplier=5.0, update_clip=0.1, min_survivors=3, colluders=1)


def _privacy(
    tmp_path: Path, target: float | None = None, released: list[float] | None = None
) -> GroupPrivacy:
    log = released if released is not None else []
    return GroupPrivacy(
        group_dp_params(PROTOCOL_V3, NOISE),
        GroupBudget(1e-5, target),
        largest_group=6,
        on_release=log.append,
        anchor_file=tmp_path / "anchor.npy",
    )


def test_the_change_since_the_last_release_is_clipped_and_the_release_is_logged_first(
    tmp_path: Path,
) -> None:
    released: list[float] = []
    privacy = _privacy(tmp_path, released=released)
    start = np.full(1000, 0.2, np.float32)
    privacy.start(start)
    trained = start + 0.05  # |change| = 1.58, sixteen times the clip
    sent, z = privacy.prepare(trained)
    assert np.linalg.norm(sent - start.astype(np.float64)) == pytest.approx(0.1)
    assert released == [z] and privacy.budget.rounds == 1
    assert z == planned_noise_multiplier(privacy.params, 6, 1000) < NOISE.noise_multiplier
    # the group's result is the next anchor, not the member's own training
    result = start + 0.01
    privacy.released(result)
    sent, _ = privacy.prepare(trained)
    assert np.linalg.norm(sent - result.astype(np.float64)) == pytest.approx(0.1)


def test_a_restart_keeps_the_released_anchor_not_its_own_training(tmp_path: Path) -> None:
    first = _privacy(tmp_path)
    released = np.linspace(-0.3, 0.3, 500)
    first.released(released)
    again = _privacy(tmp_path)
    again.start(released + 0.2)  # the checkpoint holds local training: not an anchor
    np.testing.assert_array_equal(again.anchor.vector, released)


def test_the_larger_the_group_the_smaller_the_effective_noise(tmp_path: Path) -> None:
    params = group_dp_params(PROTOCOL_V3, NOISE)
    small, large = (planned_noise_multiplier(params, k, 10**6) for k in (3, 32))
    assert large < small < NOISE.noise_multiplier
    grid = QuantisationGrid.for_group(params, 32)
    assert large == pytest.approx(5.0 * grid.sensitivity / (grid.sensitivity + 1000.0))


def test_a_spent_group_budget_refuses_the_next_release(tmp_path: Path) -> None:
    released: list[float] = []
    privacy = _privacy(tmp_path, target=1.0, released=released)
    privacy.start(np.zeros(100))
    count = 0
    with pytest.raises(GroupBudgetSpentError, match="group-level privacy budget spent"):
        while True:
            privacy.prepare(np.ones(100))
            count += 1
    assert count == len(released) >= 1
    assert privacy.budget.epsilon() <= 1.0
