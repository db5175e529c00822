"""v3's packed grid: k members' fields never carry, rounding stays unbiased, bounds hold."""

from __future__ import annotations

import numpy as np
import pytest
from fedswarm.secagg.errors import InvalidWeightError, ParameterSecurityError
from fedswarm.secagg.params import MAX_GROUP_V3, SecAggParams
from fedswarm.secagg.quantise import (
    QuantisationGrid,
    decode_sum,
    encode_contribution,
    max_weight_class,
    range_shift,
    weight_class,
)

PARAMS = SecAggParams.v3()


def _sum(updates: list[np.ndarray], weights: list[float], grid: QuantisationGrid,
         seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    total = np.zeros(grid.encoded_size(updates[0].size), dtype=np.int64)
    for update, weight in zip(updates, weights, strict=True):
        total = (total + encode_contribution(update, weight, PARAMS, grid, rng))
        total %= grid.plain_modulus
    return total


def _grid(k: int, weights: list[float]) -> QuantisationGrid:
    return QuantisationGrid.for_group(PARAMS, k, max(weight_class(w, PARAMS) for w in weights))


@pytest.mark.parametrize("k", [3, 8, MAX_GROUP_V3])
def test_k_members_at_the_clip_never_carry_into_the_neighbouring_field(k: int) -> None:
    """Every member at +C, -C and alternating signs, at the top of the weight class."""
    n = 3 * 7 + 2  # a partial last slot too
    pattern = np.resize(np.array([1.0, -1.0, 1.0, 1.0, -1.0, -1.0], np.float32), n)
    weight = (1 << 10) * PARAMS.weight_resolution  # exactly 2**class units
    weights = [weight] * k
    grid = _grid(k, weights)
    for update in (np.ones(n, np.float32), -np.ones(n, np.float32), pattern):
        average, total = decode_sum(_sum([update] * k, weights, grid), grid, n)
        assert total == pytest.approx(sum(weights))
        np.testing.assert_allclose(average, update, atol=grid.error_bound(total))


def test_packed_average_is_within_the_stated_bound_for_sample_count_weights() -> None:
    rng = np.random.default_rng(3)
    k, n = 8, 30_001
    updates = [rng.uniform(-1.2, 1.2, n).astype(np.float32) for _ in range(k)]
    weights = [float(w) for w in rng.integers(200, 5000, k)]
    grid = _grid(k, weights)
    average, total = decode_sum(_sum(updates, weights, grid), grid, n)
    clipped = np.clip(np.stack(updates).astype(np.float64), -1.0, 1.0)
    exact = (clipped * np.asarray(weights)[:, None]).sum(axis=0) / sum(weights)
    error = np.max(np.abs(average - exact))
    assert error <= grid.error_bound(total) + 1e-7
    assert error > grid.error_bound(total) / 10  # the grid really is this coarse


def test_stochastic_rounding_on_the_packed_grid_is_unbiased() -> None:
    """A value a third of a grid step wide averages to itself over many coordinates."""
    k, n = 4, 300_000
    weights = [100.0] * k
    grid = _grid(k, weights)
    value = (1 / 3) / (grid.scale * weights[0])  # a third of one member's step
    updates = [np.full(n, value, np.float32)] * k
    average, _ = decode_sum(_sum(updates, weights, grid, seed=5), grid, n)
    step = 1 / (grid.scale * sum(weights)) * k  # one member's step in the average
    standard_error = step * np.sqrt(2 / 9 / k) / np.sqrt(n)
    assert abs(float(np.mean(average.astype(np.float64))) - value) < 6 * standard_error
    assert abs(float(np.mean(average.astype(np.float64))) - value) < value / 100


def test_weight_class_is_the_power_of_two_at_or_above_the_weight() -> None:
    assert weight_class(1.0, PARAMS) == 6  # 64 units of 1/64
    assert weight_class(1.5, PARAMS) == 7  # 96 units -> 128
    assert weight_class(PARAMS.weight_resolution, PARAMS) == 0
    assert weight_class(PARAMS.max_weight, PARAMS) == max_weight_class(PARAMS) == 22


def test_a_class_above_max_weight_is_refused() -> None:
    with pytest.raises(InvalidWeightError):
        QuantisationGrid.for_group(PARAMS, 4, max_weight_class(PARAMS) + 1)


def test_a_group_above_the_measured_noise_cap_is_refused() -> None:
    QuantisationGrid.for_group(PARAMS, MAX_GROUP_V3)
    with pytest.raises(ParameterSecurityError, match="groups of up to"):
        QuantisationGrid.for_group(PARAMS, MAX_GROUP_V3 + 1)


def test_a_garbage_sum_decodes_to_bounded_values_not_to_anything() -> None:
    """A hostile sum unpacks into fields of at most 2**(field_bits - 1) each."""
    k, n = 8, 9_000
    grid = QuantisationGrid.for_group(PARAMS, k, 10)
    slots = np.random.default_rng(9).integers(0, grid.plain_modulus, grid.encoded_size(n))
    slots[-1] = 8 * 1024  # a plausible weight slot
    average, total = decode_sum(slots, grid, n)
    assert np.max(np.abs(average)) <= (1 << (grid.field_bits - 1)) / (grid.scale * total)


def test_v3_packs_three_values_per_slot_at_12_bits_for_a_group_of_8() -> None:
    grid = QuantisationGrid.for_group(PARAMS, 8)
    assert (grid.fields, grid.field_bits, grid.level) == (3, 16, 4095)
    assert grid.encoded_size(4_000_000) == 1_333_335


@pytest.mark.parametrize(("largest", "shift"), [
    (1.0, 0), (5.0, 0), (0.6, 0), (0.5, 1), (0.126, 2), (0.125, 3), (0.1, 3), (0.0, 24),
])
def test_range_shift_is_the_largest_power_of_two_that_still_covers_every_value(
    largest: float, shift: int
) -> None:
    update = np.array([0.0, -largest, largest / 3], np.float32)
    assert range_shift(update, PARAMS) == shift
    assert largest == 0 or min(abs(largest), 1.0) <= PARAMS.clip_norm / 2**shift


def test_range_shift_in_l2_mode_measures_the_scaled_update() -> None:
    params = SecAggParams.v3(clip_mode="l2", clip_norm=1.0)
    update = np.array([3.0, 4.0], np.float32)  # norm 5 -> (0.6, 0.8): shift 0
    assert range_shift(update, params) == 0
    assert range_shift(update / 40, params) == 3  # norm 0.125 -> (0.075, 0.1)


def test_a_range_shift_makes_the_grid_finer_by_its_power_of_two() -> None:
    coarse = QuantisationGrid.for_group(PARAMS, 8, 10)
    fine = QuantisationGrid.for_group(PARAMS, 8, 10, range_shift=4)
    assert fine.error_bound(100.0) == pytest.approx(coarse.error_bound(100.0) / 16)
    rng = np.random.default_rng(11)
    updates = [rng.uniform(-0.06, 0.06, 5_000).astype(np.float32) for _ in range(8)]
    weights = [10.0] * 8
    grid = QuantisationGrid.for_group(PARAMS, 8, weight_class(10.0, PARAMS), range_shift=4)
    average, total = decode_sum(_sum(updates, weights, grid), grid, 5_000)
    exact = np.mean(np.stack(updates).astype(np.float64), axis=0)
    assert np.max(np.abs(average - exact)) <= grid.error_bound(total) + 1e-9
