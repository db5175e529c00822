"""The daemon weights members by sample counts: hundreds to tens of thousands, not <= 1024."""

from __future__ import annotations

import numpy as np
import pytest
from fedswarm.secagg.errors import InvalidWeightError
from fedswarm.secagg.params import SecAggParams
from fedswarm.secagg.quantise import QuantisationGrid, quantise_weight
from fedswarm.secagg.session import AggregationResult

from .conftest import Group, random_updates
from .test_round_average import N_PARAMS, run_group, weighted_average


async def test_sample_count_weights_average_exactly_within_the_reported_bound(pool):
    params = SecAggParams()
    group = Group(4)
    updates = random_updates(4, N_PARAMS, seed=11)
    weights = [37.0, 1500.0, 12_345.5, 60_000.0]  # realistic counts, far above 1024
    results = await run_group(group, updates, weights, pool, params=params)
    first = results[0]
    assert isinstance(first, AggregationResult), first
    assert first.total_weight == pytest.approx(sum(weights), abs=1 / 64)
    bound = QuantisationGrid.for_group(params, 4).error_bound(sum(weights))
    assert first.error_bound == pytest.approx(bound)
    assert bound < 1e-5  # sample-count weights keep the average precise
    error = np.max(np.abs(first.average.astype(np.float64) - weighted_average(updates, weights)))
    assert error <= bound + 1e-6  # + float32 rounding of the published average


def test_weight_above_the_public_bound_fails_loudly_with_the_remedy():
    with pytest.raises(InvalidWeightError, match="max_weight"):
        quantise_weight(70_000.0, SecAggParams())
    assert quantise_weight(70_000.0, SecAggParams(max_weight=131072.0)) == 70_000 * 64


def test_weight_slot_cannot_wrap_for_the_largest_weights_of_a_big_group():
    params = SecAggParams()
    grid = QuantisationGrid.for_group(params, 32)
    assert 32 * quantise_weight(params.max_weight, params) < grid.plain_modulus // 2
