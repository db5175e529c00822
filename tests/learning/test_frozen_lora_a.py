"""[federation] freeze_lora_a (FFA-LoRA): A is the same on every member and never changes;
only B trains, and only B leaves the trainer."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from fedswarm.learning.errors import LearningError
from fedswarm.learning.settings import LoraSettings
from fedswarm.learning.trainer import LocalTrainer

MakeTrainer = Callable[..., LocalTrainer]


def _lora_a(trainer: LocalTrainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters()
            if ".lora_A." in n}


def test_members_with_different_seeds_share_a_and_training_leaves_it(
        make_trainer: MakeTrainer) -> None:
    one, two = make_trainer(seed=1, freeze_lora_a=True), make_trainer(seed=2, freeze_lora_a=True)
    a_before = _lora_a(one)
    assert a_before and all(torch.equal(a_before[n], t) for n, t in _lora_a(two).items())
    b_before = one.adapter_vector()

    one.train(2)

    assert all(torch.equal(a_before[n], t) for n, t in _lora_a(one).items())
    assert not np.array_equal(one.adapter_vector(), b_before)  # B did train


def test_only_b_is_averaged_and_it_is_what_a_full_adapter_holds_as_b(
        make_trainer: MakeTrainer) -> None:
    full, frozen = make_trainer(), make_trainer(freeze_lora_a=True)
    b_names = sorted(n for n in full.adapter_state() if ".lora_B." in n)
    assert sorted(frozen.adapter_state()) == b_names
    assert frozen.adapter_size == sum(full.adapter_state()[n].numel() for n in b_names)
    assert frozen.averaging_vector(True).size == 2 * frozen.adapter_size


def test_the_anchor_is_the_last_adapter_set_from_outside(make_trainer: MakeTrainer) -> None:
    trainer = make_trainer(freeze_lora_a=True)
    trainer.train(1)
    start = trainer.adapter_vector()
    trainer.load_adapter_vector(start)
    trainer.train(1)
    assert np.array_equal(trainer.anchor_vector(), start)
    assert not np.array_equal(trainer.adapter_vector(), start)


def test_an_adapter_without_lora_a_cannot_be_frozen(make_trainer: MakeTrainer) -> None:
    with pytest.raises(LearningError, match="freeze_lora_a"):
        make_trainer(lora=LoraSettings(r=4, alpha=8, peft_type="LOHA"), freeze_lora_a=True)
