"""The parts that make members bit-identical: seed pool, directions, replay, K-vector checks."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest
import torch
from fedswarm.learning.fedkseed.errors import KVectorError
from fedswarm.learning.fedkseed.parameters import (
    TunedTensor,
    parameters_fingerprint,
    tuned_tensors,
)
from fedswarm.learning.fedkseed.perturbation import direction, sign_bits
from fedswarm.learning.fedkseed.replay import add_direction, replay
from fedswarm.learning.fedkseed.sampling import seed_probabilities
from fedswarm.learning.fedkseed.seed_pool import seed_pool
from fedswarm.learning.fedkseed.state import KSeedState, check_vector
from fedswarm.learning.fedkseed.zeroth_order import projected_gradient


def test_signs_are_the_same_bytes_in_any_chunking() -> None:
    whole = sign_bits(12345, 3, 0, 5000)
    for cuts in ([0, 1, 64, 65, 255, 256, 257, 1000, 4999, 5000], [0, 777, 2500, 5000]):
        parts = [sign_bits(12345, 3, a, b - a) for a, b in itertools.pairwise(cuts)]
        assert np.array_equal(np.concatenate(parts), whole)
    assert sign_bits(12345, 3, 4096, 10).tolist() == whole[4096:4106].tolist()


def test_signs_are_pinned_and_balanced() -> None:
    """A known answer: a numpy or code change that alters the directions fails here
    (it would make members of different versions disagree on every model)."""
    bits = sign_bits(2**63 + 11, 7, 0, 4096)
    assert hashlib.sha256(bits.tobytes()).hexdigest()[:16] == PINNED
    assert 0.45 < bits.mean() < 0.55
    assert not np.array_equal(bits, sign_bits(2**63 + 11, 8, 0, 4096))  # per tensor
    z = direction(5, 0, 100, torch.device("cpu"))
    assert z.dtype == torch.float32 and set(z.unique().tolist()) == {-1.0, 1.0}


PINNED = "f05f76748b28261b"  # numpy 2.x Philox4x64, measured when written


def test_seed_pool_depends_on_federation_and_base_model() -> None:
    pool = seed_pool("fed-a", "0" * 64, 16)
    assert pool.dtype == np.uint64 and len(set(pool.tolist())) == 16
    assert np.array_equal(pool, seed_pool("fed-a", "0" * 64, 16))
    assert not np.array_equal(pool, seed_pool("fed-b", "0" * 64, 16))
    assert not np.array_equal(pool, seed_pool("fed-a", "1" * 64, 16))
    assert not np.array_equal(seed_pool("fed-a", "0" * 64, 32)[:16], pool)  # K is hashed in


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(9, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


def test_replay_is_bit_identical_whatever_the_history() -> None:
    """Two members reach the same K-vector by different paths; a replay gives both
    the same bytes, and zero scalars give back the base exactly."""
    seeds = seed_pool("fed", "0" * 64, 8)
    scalars = np.array([0.01, 0, -0.02, 0.003, 0, 0, 0.5, -1e-6], np.float32)
    one, two = _net(), _net()
    tensors_one, tensors_two = tuned_tensors_of(one), tuned_tensors_of(two)
    base = [t.param.detach().clone() for t in tensors_one]
    base_print = parameters_fingerprint(one)
    for j in (6, 0, 2, 3, 7):  # another order, other steps, rounding on the way
        add_direction(tensors_two, int(seeds[j]), float(scalars[j]) / 3)
        add_direction(tensors_two, int(seeds[j]), float(scalars[j]) * 2 / 3)
    assert parameters_fingerprint(one) != parameters_fingerprint(two)
    assert replay(tensors_one, base, seeds, scalars) == 5
    replay(tensors_two, base, seeds, scalars)
    assert parameters_fingerprint(one) == parameters_fingerprint(two)
    replay(tensors_one, base, seeds, np.zeros(8, np.float32))
    assert parameters_fingerprint(one) == base_print


def tuned_tensors_of(model: torch.nn.Module) -> list[TunedTensor]:
    return tuned_tensors(model, "all")


def test_projected_gradient_measures_the_slope_and_restores_the_weights() -> None:
    model = _net()
    tensors = tuned_tensors_of(model)
    x = torch.randn(16, 9)
    before = [t.param.detach().clone() for t in tensors]

    def loss() -> float:
        return float(model(x).pow(2).mean())

    seed = 99
    measured = projected_gradient(tensors, seed, 1e-3, loss)
    # the analytic slope along z
    model.zero_grad()
    model(x).pow(2).mean().backward()
    slope = sum(
        float(
            (
                t.param.grad
                * direction(seed, t.index, t.param.numel(), torch.device("cpu")).view(t.param.shape)
            ).sum()
        )
        for t in tensors
    )
    assert measured.g == pytest.approx(slope, rel=1e-2, abs=1e-4)
    for t, b in zip(tensors, before, strict=True):
        assert torch.allclose(t.param.detach(), b, atol=1e-6)


def test_pro_probabilities_favour_seeds_with_large_amplitudes() -> None:
    assert np.allclose(seed_probabilities(np.zeros(4, np.float32), True), 0.25)
    p = seed_probabilities(np.array([0.0, 1.0, 2.0, 2.0], np.float32), True)
    assert p.sum() == pytest.approx(1.0) and p[2] == pytest.approx(p[0] * np.e)
    assert np.allclose(seed_probabilities(np.array([0.0, 5.0], np.float32), False), 0.5)


def test_bad_vectors_are_refused_with_the_cause() -> None:
    with pytest.raises(KVectorError, match="expected"):
        check_vector(np.zeros(3), 4, 1.0, "v")
    with pytest.raises(KVectorError, match="NaN"):
        check_vector(np.array([0.0, np.nan]), 2, 1.0, "v")
    with pytest.raises(KVectorError, match="above the bound"):
        check_vector(np.array([0.0, 2.0]), 2, 1.0, "v")
    state = KSeedState.zeros(3)
    state.step(1, -0.5, 2.0)
    state.step(1, 0.25, 4.0)
    assert state.scalars.tolist() == [0.0, -0.25, 0.0] and state.amplitudes[1] == 3.0
    assert state.counts.tolist() == [0, 2, 0] and state.seeds_used() == 1
