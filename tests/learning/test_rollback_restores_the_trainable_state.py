"""Rolling back after a harmful group result restores exactly what was there (issue #19).

The validation gate applies a group's result, evaluates, and rolls back when the result
raises the member's own eval loss too much: adapter, AdamW state, FedProx anchor and
step must all be as before, so training continues as if the result never arrived.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from fedswarm.learning.trainer import LocalTrainer


def test_roll_back_undoes_a_loaded_average_and_further_training(
    make_trainer: Callable[..., LocalTrainer],
) -> None:
    trainer = make_trainer()
    trainer.train()
    before_vector = trainer.adapter_vector()
    before_moments = trainer.optimizer_moments()
    before_eval = trainer.evaluate().loss
    before_step = trainer.step
    before_anchor = {name: t.clone() for name, t in trainer._anchor.items()}
    point = trainer.rollback_point()

    hostile = np.full(before_vector.size, 0.9, dtype=np.float32)
    trainer.load_adapter_vector(hostile)
    trainer.train()
    assert not np.array_equal(trainer.adapter_vector(), before_vector)

    trainer.roll_back(point)
    np.testing.assert_array_equal(trainer.adapter_vector(), before_vector)
    after_moments = trainer.optimizer_moments()
    np.testing.assert_array_equal(after_moments.exp_avg, before_moments.exp_avg)
    np.testing.assert_array_equal(after_moments.exp_avg_sq, before_moments.exp_avg_sq)
    assert trainer.step == before_step
    assert trainer.evaluate().loss == before_eval
    # the FedProx anchor is the pre-average one again, not the hostile vector
    assert trainer._anchor.keys() == before_anchor.keys()
    for name, tensor in before_anchor.items():
        assert torch.equal(trainer._anchor[name], tensor), name


def test_roll_back_restores_scaffolds_control_variates(
    make_trainer: Callable[..., LocalTrainer],
) -> None:
    """A refused group's ``c`` must not correct the next round's steps."""
    trainer = make_trainer(scaffold=True)
    trainer.train()
    point = trainer.rollback_point()
    own_before = trainer.control_vector()
    trainer.load_control_average(np.full(own_before.size, 0.5, dtype=np.float32))
    trainer.train()
    assert not np.array_equal(trainer.control_vector(), own_before)

    trainer.roll_back(point)
    np.testing.assert_array_equal(trainer.control_vector(), own_before)
    assert trainer.control is not None
    assert all(not torch.any(d) for d in trainer.control._delta)  # no group c yet
