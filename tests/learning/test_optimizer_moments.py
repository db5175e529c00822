"""AdamW moments leave and re-enter a trainer in adapter-vector order, checked, steps kept."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from fedswarm.learning.errors import LearningError
from fedswarm.learning.trainer import LocalTrainer

MakeTrainer = Callable[..., LocalTrainer]


def _state_of(trainer: LocalTrainer, key: str) -> np.ndarray:
    """The optimiser state read the long way: by parameter, sorted by name."""
    params = dict(trainer.model.named_parameters())
    names = sorted(name for name, p in params.items() if p.requires_grad)
    return np.concatenate([trainer.optimizer.state[params[n]][key].reshape(-1).numpy()
                           for n in names])


def test_moments_read_in_adapter_order_and_load_back(make_trainer: MakeTrainer) -> None:
    trainer = make_trainer()
    trainer.train(2)
    moments = trainer.optimizer_moments()
    assert np.array_equal(moments.exp_avg, _state_of(trainer, "exp_avg"))
    assert np.array_equal(moments.exp_avg_sq, _state_of(trainer, "exp_avg_sq"))
    assert set(moments.steps.tolist()) == {2.0}

    trainer.load_optimizer_moments(moments.exp_avg * 0.5, moments.exp_avg_sq * 4.0)

    again = trainer.optimizer_moments()
    assert np.array_equal(again.exp_avg, moments.exp_avg * 0.5)
    assert np.array_equal(again.exp_avg_sq, moments.exp_avg_sq * 4.0)
    assert set(again.steps.tolist()) == {2.0}  # each peer keeps its own step count


def test_moments_before_the_first_step_are_zero_and_can_be_loaded(
        make_trainer: MakeTrainer) -> None:
    trainer = make_trainer()
    moments = trainer.optimizer_moments()
    size = moments.exp_avg.size
    assert size > 0 and not moments.exp_avg.any() and not moments.exp_avg_sq.any()
    assert not moments.steps.any()

    trainer.load_optimizer_moments(np.full(size, 1e-3, np.float32),
                                   np.full(size, 1e-6, np.float32))

    assert set(trainer.optimizer_moments().steps.tolist()) == {0.0}
    trainer.train(1)  # AdamW accepts the state it would have created itself
    after = trainer.optimizer_moments()
    assert set(after.steps.tolist()) == {1.0}
    assert np.isfinite(after.exp_avg).all() and (after.exp_avg_sq > 0).all()


@pytest.mark.parametrize("fault", ["nan", "negative", "short"])
def test_bad_moments_are_refused_and_change_nothing(make_trainer: MakeTrainer,
                                                    fault: str) -> None:
    trainer = make_trainer()
    trainer.train(1)
    before = trainer.optimizer_moments()
    m, v = before.exp_avg.copy(), before.exp_avg_sq.copy()
    if fault == "nan":
        v[-1] = np.nan  # the last parameter: every earlier one would be written first
    elif fault == "negative":
        v[-1] = -1e-9
    else:
        m = m[:-1]
    with pytest.raises(LearningError):
        trainer.load_optimizer_moments(m, v)
    after = trainer.optimizer_moments()
    assert np.array_equal(after.exp_avg, before.exp_avg)
    assert np.array_equal(after.exp_avg_sq, before.exp_avg_sq)


def test_averaging_vector_round_trips_adapter_and_moments(make_trainer: MakeTrainer) -> None:
    trainer = make_trainer()
    trainer.train(3)
    adapter = trainer.adapter_state()
    moments = trainer.optimizer_moments()
    vector = trainer.averaging_vector(with_moments=True)
    assert vector.size == 2 * moments.exp_avg.size  # adapter and exp_avg
    assert trainer.averaging_vector(with_moments=False).size == moments.exp_avg.size

    trainer.load_averaging_vector(vector, with_moments=True)

    assert all(torch.equal(adapter[n], t) for n, t in trainer.adapter_state().items())
    again = trainer.optimizer_moments()
    np.testing.assert_allclose(again.exp_avg, moments.exp_avg, rtol=1e-6, atol=0)
    assert np.array_equal(again.exp_avg_sq, moments.exp_avg_sq)  # never averaged


def test_a_vector_of_the_other_layout_is_refused_with_the_reason(
        make_trainer: MakeTrainer) -> None:
    trainer = make_trainer()
    trainer.train(1)
    adapter_only = trainer.averaging_vector(with_moments=False)
    before = trainer.adapter_state()
    with pytest.raises(LearningError, match="average_optimizer_state"):
        trainer.load_averaging_vector(adapter_only, with_moments=True)
    assert all(torch.equal(before[n], t) for n, t in trainer.adapter_state().items())
