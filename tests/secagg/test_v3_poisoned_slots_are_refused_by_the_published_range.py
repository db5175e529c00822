"""Under v3 a poisoned masked vector decodes to garbage *inside* the clip, so the clip
bound alone no longer catches it; the group's published range does.

v2 decoded p/4 added to a member's masked slots as values near 8e6, far beyond the clip
of 1. v3 unpacks each slot into signed fields that cannot leave their range, so the same
attack yields values that look clipped. Each v3 member publishes the range its values
lie in (its range shift, in KEYS); the group's result carries ``value_bound`` =
clip / 2**(smallest shift), and ``check_group_average`` refuses anything beyond it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from fedswarm.federation.averaging.bounds import check_group_average
from fedswarm.federation.averaging.result import GroupAverage
from fedswarm.federation.errors import RoundAbortedError
from fedswarm.secagg.he import encrypt_vector, load_public_context, masked_contribution
from fedswarm.secagg.params import SecAggParams
from fedswarm.secagg.roles import assign_roles
from fedswarm.secagg.session import AggregationResult, _Session

from .conftest import Group
from .test_round_average import run_group

PARAMS = SecAggParams.v3(clip_norm=1.0, quantisation="stochastic")
N = 3000
RANGE = 0.05  # honest updates within 1/16 of the clip: range shift 4


def _poison(monkeypatch: pytest.MonkeyPatch, attacker: str) -> None:
    real = _Session._encrypted_segments

    async def segments(self: Any, mask_set: tuple[str, ...]) -> AsyncIterator[list[bytes]]:
        if self.me != attacker:
            async for chunks in real(self, mask_set):
                yield chunks
            return
        job = self._contribution_job(mask_set)

        def poisoned() -> list[bytes]:
            values = masked_contribution(job)
            p = job.grid().plain_modulus
            values[:-1] = (values[:-1] + p // 4) % p
            return encrypt_vector(load_public_context(job.public_context), values,
                                  job.params.slot_count)

        yield await asyncio.to_thread(poisoned)  # streamed in chunks like any upload

    monkeypatch.setattr(_Session, "_encrypted_segments", segments)


def _as_group_average(result: AggregationResult) -> GroupAverage:
    return GroupAverage(average=result.average, total_weight=result.total_weight,
                        survivors=list(result.survivors), dropped=list(result.dropped),
                        protocol=PARAMS.protocol, error_bound=result.error_bound,
                        value_bound=result.value_bound)


async def test_garbage_inside_the_clip_is_refused_by_the_groups_range(
    pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = Group(4)
    a, d = assign_roles(group.members, group.spec.round, group.spec.group_id)
    attacker = next(m for m in group.members if m not in (a, d))
    _poison(monkeypatch, attacker)
    rng = np.random.default_rng(3)
    updates = [rng.uniform(-RANGE, RANGE, N).astype(np.float32) for _ in group.members]
    weights = [300.0, 500.0, 200.0, 400.0]

    results = await run_group(group, updates, weights, pool, params=PARAMS)

    honest = [r for m, r in zip(group.members, results, strict=True) if m != attacker]
    for result in honest:
        assert isinstance(result, AggregationResult), result
        assert result.value_bound == pytest.approx(1.0 / 16)
        largest = float(np.max(np.abs(result.average)))
        # what made the clip check blind: the garbage looks like clipped values ...
        assert largest <= PARAMS.clip_norm, largest
        # ... but not like anything this group's published range allows
        assert largest > result.value_bound + result.error_bound, largest
        with pytest.raises(RoundAbortedError, match="the group's published range"):
            check_group_average(_as_group_average(result), 300.0, PARAMS,
                                weight_tolerance=PARAMS.weight_resolution)


async def test_an_honest_v3_group_passes_its_own_range(pool: Any) -> None:
    group = Group(4)
    rng = np.random.default_rng(4)
    updates = [rng.uniform(-RANGE, RANGE, N).astype(np.float32) for _ in group.members]
    results = await run_group(group, updates, [300.0, 500.0, 200.0, 400.0], pool,
                              params=PARAMS)
    for result in results:
        assert isinstance(result, AggregationResult), result
        checked = check_group_average(_as_group_average(result), 200.0, PARAMS,
                                      weight_tolerance=PARAMS.weight_resolution)
        assert float(np.max(np.abs(checked.average))) <= RANGE + result.error_bound
