"""Tiny, zero and large AdamW moments come out of a real secure-aggregation round usable.

Secure aggregation clips every coordinate to ±clip_norm and rounds it to a grid
(1/(scale·weight): ~5e-4 with weight 1 as here, ~2e-6 with the demo's sample counts).
Adam divides by sqrt(v) + eps, so an averaged exp_avg that lands, even as rounding
noise, where the peer's own exp_avg_sq is ~0 would be a huge step. The members' vectors
here go through the real protocol (BFV + masks + Shamir, HE in a worker process) over
in-memory queues; the result is loaded into a real trainer, which then takes one real
optimiser step.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from fedswarm.learning import moment_averaging
from fedswarm.learning.optimizer_moments import Moments
from fedswarm.learning.trainer import LocalTrainer
from fedswarm.secagg.he import make_executor
from fedswarm.secagg.params import SecAggParams
from fedswarm.secagg.quantise import QuantisationGrid
from fedswarm.secagg.session import AggregationResult, GroupSpec, run_secure_aggregation
from fedswarm.secagg.signing import Ed25519Signer, verifier_from_keys

from bench.quality_transport import queue_transports

MakeTrainer = Callable[..., LocalTrainer]
GRAD_NORM = 5.0  # larger than clip_norm: moments up to 5 must not be cut at 1
LR = 3e-3


@pytest.fixture(scope="module")
def pool() -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    executor = make_executor(1)
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


async def _secure_average(vectors: list[np.ndarray],
                          pool: concurrent.futures.ProcessPoolExecutor) -> AggregationResult:
    members = tuple(f"peer-{i}" for i in range(len(vectors)))
    signers = {m: Ed25519Signer.generate(m) for m in members}
    verify = verifier_from_keys({m: s.verify_key for m, s in signers.items()})
    spec = GroupSpec("fed-test", "g-moments", 4, members)
    transports = queue_transports(members)
    results = await asyncio.gather(*(
        run_secure_aggregation(spec, signers[m], verify, vector, 1.0, transports[m],
                               SecAggParams(), step_timeout_s=60.0, executor=pool)
        for m, vector in zip(members, vectors, strict=True)))
    return results[0]


def moment_bound_at(t: int) -> float:
    return float(moment_averaging.moment_bound(np.array([t], np.float32), 0.9, 0.999)[0])


async def test_tiny_zero_and_large_moments_come_back_finite_and_bounded(
        make_trainer: MakeTrainer, pool: concurrent.futures.ProcessPoolExecutor) -> None:
    trainer = make_trainer(max_grad_norm=GRAD_NORM, lr=LR)
    trainer.train(3)
    steps = trainer.optimizer_moments().steps
    n = steps.size
    odd = np.arange(n) % 2 == 1
    rng = np.random.default_rng(0)
    signs = np.where(rng.random(n) < 0.5, -1.0, 1.0).astype(np.float32)
    k3 = moment_bound_at(3)
    # Our own state: sqrt(v) = 3e-10 (far below the grid) on odd coordinates, as large as
    # max_grad_norm allows on even ones (|exp_avg| <= max_grad_norm too).
    own_root = np.where(odd, 3e-10, GRAD_NORM).astype(np.float32)
    trainer.load_optimizer_moments(signs * np.minimum(k3 * own_root, GRAD_NORM), own_root ** 2)
    own = trainer.optimizer_moments()
    # One grid step of the round, in exp_avg units (every member's weight is 1 here).
    quantum = GRAD_NORM / QuantisationGrid.for_group(SecAggParams(), 4).scale
    zeros = np.zeros(n, np.float32)
    others = [
        Moments(signs * 0.3 * quantum, zeros, steps),  # tiny: below the grid
        Moments(zeros, zeros, steps),  # zero
        Moments(np.where(odd, 0.0, signs * GRAD_NORM).astype(np.float32), zeros, steps),  # large
    ]
    adapter = trainer.averaging_vector(with_moments=False)
    vectors = [trainer.averaging_vector(with_moments=True)] + [
        moment_averaging.encode(adapter, m, GRAD_NORM) for m in others]

    result = await _secure_average(vectors, pool)
    trainer.load_averaging_vector(result.average, with_moments=True)

    loaded = trainer.optimizer_moments()
    m, v = loaded.exp_avg.astype(np.float64), loaded.exp_avg_sq.astype(np.float64)
    assert np.isfinite(m).all() and np.isfinite(v).all() and (v >= 0).all()
    assert np.array_equal(loaded.exp_avg_sq, own.exp_avg_sq)  # each peer keeps its own v
    assert (np.abs(m) <= k3 * np.sqrt(v) * (1 + 1e-5)).all()
    # Where the bound leaves room, exp_avg is the members' mean within the quantisation
    # bound, and large moments are not clipped at clip_norm = 1 (they average to ≈ 5/2).
    expected = np.mean(np.stack([own.exp_avg, *(o.exp_avg for o in others)]), axis=0)
    tolerance = result.error_bound * GRAD_NORM * 1.01
    assert np.abs(m[~odd] - expected[~odd]).max() <= tolerance
    assert np.abs(m[~odd]).min() > 1.0

    before = trainer.adapter_state()
    trainer.train(1)
    after = trainer.adapter_state()
    step = max(float((after[k] - before[k]).abs().max()) for k in before)
    beta1, beta2 = trainer.optimizer.param_groups[0]["betas"]
    # AdamW's step per coordinate is at most lr · K_4 · sqrt(1 - β2⁴) / (1 - β1⁴) ≈ lr.
    limit = LR * moment_bound_at(4) * (1 - beta2 ** 4) ** 0.5 / (1 - beta1 ** 4)
    assert 0 < step <= limit * 1.01
    assert all(torch.isfinite(t).all() for t in after.values())
