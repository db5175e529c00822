"""Weighted averaging, carried weight (mass conservation) and staleness."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fedswarm.federation.averaging.weighting import (
    carried_weight,
    weighted_average,
    weighted_average_by_peer,
)
from fedswarm.federation.errors import StalenessError, WeightError
from fedswarm.federation.staleness import staleness
from hypothesis import given, settings
from hypothesis import strategies as st


def test_weighted_average_weights_by_sample_count() -> None:
    result = weighted_average([np.array([0.0, 10.0]), np.array([4.0, 2.0])], [3.0, 1.0])
    np.testing.assert_allclose(result, [1.0, 8.0])
    assert result.dtype == np.float32


def test_average_by_peer_is_bit_identical_whatever_the_mapping_order() -> None:
    rng = np.random.default_rng(1)
    contributions = {
        f"peer-{i}": (rng.normal(size=257).astype(np.float32), float(rng.integers(1, 1000)))
        for i in range(7)
    }
    reversed_order = dict(reversed(list(contributions.items())))
    first = weighted_average_by_peer(contributions)
    second = weighted_average_by_peer(reversed_order)
    assert first.tobytes() == second.tobytes()


@pytest.mark.parametrize(
    ("vectors", "weights"),
    [
        ([], []),
        ([np.zeros(3)], [1.0, 2.0]),
        ([np.zeros(3), np.zeros(4)], [1.0, 1.0]),
        ([np.zeros(3)], [0.0]),
        ([np.zeros(3)], [-1.0]),
        ([np.zeros(3)], [math.nan]),
        ([np.array([1.0, math.inf, 0.0])], [1.0]),
    ],
)
def test_bad_vectors_or_weights_raise_weight_error(vectors, weights) -> None:
    with pytest.raises(WeightError):
        weighted_average(vectors, weights)


@settings(max_examples=100, deadline=None)
@given(
    masses=st.lists(st.floats(1.0, 1e6), min_size=6, max_size=12),
    split=st.integers(3, 6),
)
def test_carried_weight_conserves_total_mass_and_weighted_sum(
    masses: list[float], split: int
) -> None:
    """Averaging a group and sharing its mass leaves sum(w) and sum(w * x) unchanged."""
    rng = np.random.default_rng(len(masses))
    values = rng.normal(size=len(masses))
    group = list(range(min(split, len(masses))))
    before_mass = math.fsum(masses)
    before_sum = math.fsum(w * x for w, x in zip(masses, values, strict=True))
    group_weights = [masses[i] for i in group]
    average = math.fsum(masses[i] * values[i] for i in group) / math.fsum(group_weights)
    shared = carried_weight(group_weights)
    for i in group:
        masses[i] = shared
        values[i] = average
    assert math.isclose(math.fsum(masses), before_mass, rel_tol=1e-12)
    after_sum = math.fsum(w * x for w, x in zip(masses, values, strict=True))
    assert math.isclose(after_sum, before_sum, rel_tol=1e-9, abs_tol=1e-6)


def test_carried_weight_of_empty_group_raises() -> None:
    with pytest.raises(WeightError):
        carried_weight([])


def test_staleness_counts_rounds_since_last_aggregation() -> None:
    assert staleness(10, 10) == 0
    assert staleness(10, 7) == 3
    assert staleness(4, None) == 5


def test_staleness_from_the_future_raises() -> None:
    with pytest.raises(StalenessError):
        staleness(3, 5)
