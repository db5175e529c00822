"""Group-level DP inside secure aggregation: calibrated noise, sensitivity, headroom."""

from __future__ import annotations

import asyncio
import dataclasses
import math

import numpy as np
import pytest
from fedswarm.secagg.distributed_dp import (
    DDP_FIELDS_PER_SLOT,
    GroupNoise,
    clip_update,
    effective_noise_multiplier,
)
from fedswarm.secagg.errors import ParameterSecurityError
from fedswarm.secagg.params import MAX_GROUP_V3, SecAggParams
from fedswarm.secagg.quantise import (
    QuantisationGrid,
    decode_sum,
    encode_contribution,
    unpack_fields,
    weight_class,
)
from fedswarm.secagg.session import AggregationResult, GroupSpec, run_secure_aggregation

from .conftest import Group

NOISE = GroupNoise(noise_multiplier=1.0, update_clip=0.1, min_survivors=3, colluders=1)
PARAMS = SecAggParams.v3().with_group_noise(NOISE)


def _grid(k: int, weight: float = 1.0, params: SecAggParams = PARAMS) -> QuantisationGrid:
    return QuantisationGrid.for_group(params, k, weight_class(weight, params), 0)


def _field_sums(summed: np.ndarray, grid: QuantisationGrid, n: int) -> np.ndarray:
    """The integer sum per coordinate, before dividing by the scale."""
    slots = summed[:-1]
    signed = np.where(slots > grid.plain_modulus // 2, slots - grid.plain_modulus, slots)
    return unpack_fields(signed, grid).reshape(-1)[:n]


def _encode_sum(updates: list[np.ndarray], grid: QuantisationGrid, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    total = np.zeros(grid.encoded_size(updates[0].size), dtype=np.int64)
    for update in updates:
        total = (total + encode_contribution(update, 1.0, PARAMS, grid, rng)) % grid.plain_modulus
    return total


def test_the_group_sums_noise_has_the_calibrated_variance_and_a_wrong_one_is_rejected() -> None:
    k, n = 4, 40_000
    grid = _grid(k)
    sums = _field_sums(_encode_sum([np.zeros(n)] * k, grid, seed=1), grid, n).astype(np.float64)
    variance = float(np.var(sums))
    standard_error = math.sqrt(2.0 / n)  # of a sample variance, relative
    predicted = k * grid.noise_std**2

    def matches(expected: float) -> bool:
        return abs(variance / expected - 1.0) < 5 * standard_error

    assert matches(predicted)
    assert not matches((k - 1) * grid.noise_std**2)  # control: one member's noise fewer
    # what the noise is calibrated for: the honest floor's noise is z times the sensitivity
    honest = NOISE.honest_floor * grid.noise_std**2
    assert honest == pytest.approx((NOISE.noise_multiplier * grid.sensitivity) ** 2)


def test_one_members_data_moves_its_integers_by_at_most_the_sensitivity_plus_rounding() -> None:
    rng = np.random.default_rng(5)
    n, k = 20_000, 8
    grid = _grid(k)
    anchor = rng.uniform(-0.5, 0.5, n)
    trained = anchor + rng.normal(0, 0.05, n)  # |delta| about 7, far above the clip
    sent, norm = clip_update(trained, anchor, NOISE.update_clip)
    assert norm > NOISE.update_clip
    assert np.linalg.norm(sent - anchor) <= NOISE.update_clip * (1 + 1e-12)
    unchanged, _ = clip_update(anchor + 1e-4, anchor, NOISE.update_clip)
    np.testing.assert_allclose(unchanged, anchor + 1e-4)
    # the same coins and noise for both neighbours (the coupling of the proof): the
    # integers differ by the clipped delta on the grid, within Delta + sqrt(d)
    with_data = encode_contribution(sent, 1.0, PARAMS, grid, np.random.default_rng(9))
    without = encode_contribution(anchor, 1.0, PARAMS, grid, np.random.default_rng(9))
    move = _field_sums(with_data, grid, n) - _field_sums(without, grid, n)
    bound = grid.sensitivity + math.sqrt(n)
    assert np.linalg.norm(move) <= bound
    assert np.linalg.norm(move) > 0.9 * grid.sensitivity  # the bound is nearly reached


@pytest.mark.parametrize("pattern", ["plus", "minus", "alternating"])
def test_32_members_at_the_clip_with_noise_never_carry_into_a_neighbouring_field(
    pattern: str,
) -> None:
    k, n = MAX_GROUP_V3, 4_001
    grid = _grid(k)
    value = {
        "plus": np.ones(n),
        "minus": -np.ones(n),
        "alternating": np.resize([1.0, -1.0, -1.0], n),
    }[pattern]
    summed = _encode_sum([value] * k, grid, seed=2)
    average, total = decode_sum(summed, grid, n)
    assert total == pytest.approx(k)
    assert grid.field_bits == 24 and grid.fields == DDP_FIELDS_PER_SLOT
    # a carry would move a coordinate by 2**24 / scale, far outside the bound
    np.testing.assert_allclose(average, value, atol=grid.error_bound(total))
    assert np.max(np.abs(average - value)) > grid.error_bound(total) / 40  # noise is there


def test_effective_noise_multiplier_loses_what_rounding_can_add() -> None:
    grid = _grid(32)
    z = effective_noise_multiplier(1.0, grid.sensitivity, 1_000_000)
    assert z == pytest.approx(grid.sensitivity / (grid.sensitivity + 1000.0))
    assert 0.9 < z < 1.0


def test_refusals() -> None:
    with pytest.raises(ParameterSecurityError, match="at least 1 honest survivor"):
        GroupNoise(1.0, 0.1, min_survivors=3, colluders=3)
    with pytest.raises(ParameterSecurityError, match="noise multiplier"):
        GroupNoise(0.0, 0.1, min_survivors=3)
    with pytest.raises(ParameterSecurityError, match="group-level DP needs"):
        dataclasses.replace(SecAggParams(), group_noise=NOISE).validate()
    with pytest.raises(ParameterSecurityError, match="group-level DP needs"):
        dataclasses.replace(PARAMS, fields_per_slot=3).validate()
    huge = SecAggParams.v3().with_group_noise(GroupNoise(1e9, 1.0, 3))
    with pytest.raises(ParameterSecurityError, match="does not fit a field"):
        _grid(8, params=huge)


async def test_a_round_with_group_dp_gives_the_average_within_the_predicted_noise(
    pool: object,
) -> None:
    k, n = 4, 6_000
    group = Group(k)
    spec = dataclasses.replace(group.spec, min_survivors=NOISE.min_survivors)
    rng = np.random.default_rng(11)
    updates = [rng.uniform(-0.5, 0.5, n) for _ in range(k)]
    results = await _run(group, spec, updates, pool)
    assert all(isinstance(r, AggregationResult) for r in results), results
    first = results[0]
    assert isinstance(first, AggregationResult), first
    grid = _grid(k)
    exact = np.mean(np.stack(updates), axis=0)
    error = first.average.astype(np.float64) - exact
    assert np.max(np.abs(error)) <= first.error_bound
    predicted_std = math.sqrt(k) * grid.noise_std / (grid.scale * k)
    assert float(np.std(error)) == pytest.approx(predicted_std, rel=0.1)
    assert first.effective_noise_multiplier == pytest.approx(
        effective_noise_multiplier(NOISE.noise_multiplier, grid.sensitivity, n)
    )
    # a session that would reveal a sum of fewer survivors than the noise assumes
    with pytest.raises(ParameterSecurityError, match="calibrated for at least 3"):
        await run_secure_aggregation(
            dataclasses.replace(group.spec, min_survivors=2),
            group.signers[group.members[0]],
            group.verify,
            updates[0],
            1.0,
            group.network.transport(group.members[0]),
            PARAMS,
        )


async def _run(
    group: Group, spec: GroupSpec, updates: list[np.ndarray], pool: object
) -> list[AggregationResult | BaseException]:
    return await asyncio.gather(  # type: ignore[no-any-return]
        *[
            run_secure_aggregation(
                spec,
                group.signers[m],
                group.verify,
                updates[i],
                1.0,
                group.network.transport(m),
                PARAMS,
                step_timeout_s=20.0,
                executor=pool,
            )
            for i, m in enumerate(group.members)
        ],
        return_exceptions=True,
    )
