"""Full rounds over the in-memory transport: the decrypted average is the weighted average."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable

import numpy as np
import pytest
from fedswarm.secagg.params import SecAggParams
from fedswarm.secagg.session import AggregationResult, run_secure_aggregation
from fedswarm.secagg.transport import Transport

from .conftest import SMALL_PARAMS, Group, group_grid, random_updates

N_PARAMS = 5000


async def run_group(
    group: Group,
    updates: list[np.ndarray],
    weights: list[float],
    pool: concurrent.futures.ProcessPoolExecutor,
    params: SecAggParams = SMALL_PARAMS,
    drop_at: dict[str, int] | None = None,
    timeout: float = 20.0,
    moved_on: Callable[[str], bool] | None = None,
    wrap: dict[str, Callable[[Transport], Transport]] | None = None,
) -> list[AggregationResult | BaseException]:
    """Every member's session at once; ``wrap[m]`` replaces member m's transport by a
    wrapper around it (a lost or hung message)."""
    drop_at = drop_at or {}
    wrap = wrap or {}

    def transport(m: str) -> Transport:
        own: Transport = group.network.transport(m, drop_at.get(m))
        return wrap[m](own) if m in wrap else own

    tasks = [
        run_secure_aggregation(
            group.spec,
            group.signers[m],
            group.verify,
            updates[i],
            weights[i],
            transport(m),
            params,
            step_timeout_s=timeout,
            executor=pool,
            moved_on=moved_on,
        )
        for i, m in enumerate(group.members)
    ]
    return list(await asyncio.gather(*tasks, return_exceptions=True))


def weighted_average(updates: list[np.ndarray], weights: list[float]) -> np.ndarray:
    stacked = np.stack([u.astype(np.float64) for u in updates])
    w = np.asarray(weights, dtype=np.float64)
    return (stacked * w[:, None]).sum(axis=0) / w.sum()


@pytest.mark.parametrize("k", [3, 4, 8, 16])
async def test_average_matches_plaintext_within_quantisation_bound(k, pool):
    group = Group(k)
    updates = random_updates(k, N_PARAMS, seed=k)
    weights = [1.0 + (i % 3) * 0.5 for i in range(k)]
    results = await run_group(group, updates, weights, pool)
    for r in results:
        assert isinstance(r, AggregationResult), r
    expected = weighted_average(updates, weights)
    bound = group_grid(k, weights).error_bound(sum(weights))
    first = results[0]
    assert isinstance(first, AggregationResult)
    assert first.error_bound == pytest.approx(bound)
    assert first.total_weight == pytest.approx(sum(weights))
    assert np.max(np.abs(first.average.astype(np.float64) - expected)) <= bound + 1e-6
    assert first.survivors == group.members and first.dropped == ()
    for r in results[1:]:
        assert isinstance(r, AggregationResult)
        assert np.array_equal(r.average, first.average)  # everyone gets D's signed bytes
        assert r.average.dtype == np.float32 and r.average.shape == (N_PARAMS,)
