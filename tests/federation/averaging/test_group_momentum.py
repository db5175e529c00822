"""[federation] group_momentum: FedAvgM on each member, from where its training started."""

from __future__ import annotations

import numpy as np
import pytest
from fedswarm.federation.averaging.group_momentum import GroupMomentum
from fedswarm.federation.errors import WeightError


def _v(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def test_the_first_result_is_taken_as_it_is_whatever_the_start() -> None:
    momentum = GroupMomentum(0.9)
    # Members start from their own adapters; a step from ours would keep our offset.
    assert np.array_equal(momentum.step(_v(5.0, -5.0), _v(1.0, 2.0)), _v(1.0, 2.0))


def test_later_results_add_the_remembered_steps() -> None:
    momentum = GroupMomentum(0.5)
    momentum.step(_v(0.0), _v(1.0))              # first: taken as it is, v = 0
    assert momentum.step(_v(1.0), _v(2.0)) == pytest.approx([2.0])   # v = 1
    assert momentum.step(_v(2.0), _v(3.0)) == pytest.approx([3.5])   # v = 0.5 + 1
    assert momentum.step(_v(3.5), _v(3.5)) == pytest.approx([4.25])  # v = 0.75 + 0


def test_zero_momentum_is_plain_averaging() -> None:
    momentum = GroupMomentum(0.0)
    momentum.step(_v(0.0, 0.0), _v(1.0, 1.0))
    assert np.allclose(momentum.step(_v(1.0, 1.0), _v(0.25, 3.0)), _v(0.25, 3.0))


def test_out_of_range_beta_and_changed_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="group_momentum"):
        GroupMomentum(1.0)
    momentum = GroupMomentum(0.5)
    with pytest.raises(WeightError, match="shape"):
        momentum.step(_v(0.0), _v(1.0, 2.0))
    momentum.step(_v(0.0), _v(1.0))
    with pytest.raises(WeightError, match="changed size"):
        momentum.step(_v(0.0, 0.0), _v(1.0, 2.0))


def test_restore_forgets_the_steps_taken_since_the_copy() -> None:
    momentum = GroupMomentum(0.5)
    momentum.step(_v(0.0), _v(1.0))
    momentum.step(_v(1.0), _v(2.0))                # v = 1
    kept = momentum.velocity()
    momentum.step(_v(2.0), _v(9.0))                # a result the validation gate refuses
    momentum.restore(kept)
    assert momentum.step(_v(2.0), _v(3.0)) == pytest.approx([3.5])  # as if never seen
    fresh = GroupMomentum(0.5)
    fresh.restore(fresh.velocity())                # before any result: still the first
    assert np.array_equal(fresh.step(_v(5.0), _v(1.0)), _v(1.0))
