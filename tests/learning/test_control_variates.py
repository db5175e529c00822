"""[federation] scaffold: each step is corrected by c − c_i, and c_i travels in the
averaged vector (so through secure aggregation like the adapter)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from fedswarm.federation.modes.lora_avg import LoraAveragingSettings, member_vector
from fedswarm.learning.errors import LearningError
from fedswarm.learning.trainer import LocalTrainer

MakeTrainer = Callable[..., LocalTrainer]


def test_no_correction_until_the_group_differs_from_us(make_trainer: MakeTrainer) -> None:
    corrected, plain = make_trainer(scaffold=True), make_trainer()
    corrected.train(2)
    plain.train(2)
    assert np.array_equal(corrected.adapter_vector(), plain.adapter_vector())

    corrected.load_control_average(corrected.control_vector())  # c = c_i: nothing to correct
    corrected.train(1)
    plain.train(1)
    assert np.allclose(corrected.adapter_vector(), plain.adapter_vector(), atol=1e-7)

    corrected.load_control_average(corrected.control_vector() + 0.5)  # c = c_i + 0.5 g
    corrected.train(1)
    plain.train(1)
    assert not np.allclose(corrected.adapter_vector(), plain.adapter_vector(), atol=1e-4)


def test_c_i_is_the_mean_clipped_gradient_inside_the_clip(make_trainer: MakeTrainer) -> None:
    trainer = make_trainer(scaffold=True, max_grad_norm=0.5)
    assert not trainer.control_vector().any()  # before any step
    trainer.train(3)
    c_i = trainer.control_vector()
    assert c_i.shape == (trainer.adapter_size,) and c_i.any()
    # Each step's gradient has L2 norm <= g; so has their mean, divided by g: <= 1.
    assert float(np.linalg.norm(c_i.astype(np.float64))) <= 1.0 + 1e-5


def test_c_i_is_part_of_the_vector_the_group_averages(make_trainer: MakeTrainer) -> None:
    trainer = make_trainer(scaffold=True)
    trainer.train(2)
    settings = LoraAveragingSettings(average_optimizer_state=True, scaffold=True)
    vector = member_vector(trainer, settings)
    size = trainer.adapter_size
    assert vector.size == 3 * size + 4  # adapter, exp_avg, c_i, settings marker
    assert np.array_equal(vector[2 * size:3 * size], trainer.control_vector())


def test_a_bad_group_control_variate_is_refused(make_trainer: MakeTrainer) -> None:
    trainer = make_trainer(scaffold=True)
    with pytest.raises(LearningError, match="shape"):
        trainer.load_control_average(np.zeros(3, np.float32))
    with pytest.raises(LearningError, match="NaN"):
        trainer.load_control_average(np.full(trainer.adapter_size, np.nan, np.float32))
    with pytest.raises(LearningError, match="without scaffold"):
        make_trainer().control_vector()
