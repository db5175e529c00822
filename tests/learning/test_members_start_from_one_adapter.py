"""Every member starts from the same adapter, whatever its own ``train.seed``.

B starts at zero and A is drawn from one shared seed: averaging A and B separately is
then close to averaging the members' products B·A after a round. With A drawn from each
member's seed, the first average kept a fraction of what the group learnt.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from fedswarm.learning.settings import LoraSettings
from fedswarm.learning.trainer import LocalTrainer

MakeTrainer = Callable[..., LocalTrainer]


def _products(trainer: LocalTrainer) -> dict[str, torch.Tensor]:
    """Each LoRA layer's B·A, the change it makes to the base weight (scale aside)."""
    params = dict(trainer.model.named_parameters())
    return {name: params[name.replace(".lora_A.", ".lora_B.")].detach()
            @ param.detach() for name, param in params.items() if ".lora_A." in name}


def test_members_with_different_seeds_start_with_identical_adapters(
        make_trainer: MakeTrainer) -> None:
    one, two = make_trainer(seed=1), make_trainer(seed=2)
    assert one.adapter_size > 0
    assert np.array_equal(one.adapter_vector(), two.adapter_vector())
    assert np.any(one.adapter_vector() != 0)  # A is drawn, not zero


def test_the_average_of_a_and_b_is_close_to_the_average_of_the_products(
        make_trainer: MakeTrainer) -> None:
    members = [make_trainer(seed=seed) for seed in (1, 2, 3)]
    for member in members:
        member.train(3)
    exact = {name: sum(_products(m)[name] for m in members) / 3 for name in _products(members[0])}
    averaged = make_trainer(seed=4)
    averaged.load_adapter_vector(np.mean([m.adapter_vector() for m in members], axis=0))
    for name, product in _products(averaged).items():
        error = torch.linalg.norm(product - exact[name]) / torch.linalg.norm(exact[name])
        assert error < 0.2, (name, float(error))


def test_other_adapter_types_are_left_as_peft_made_them(make_trainer: MakeTrainer) -> None:
    trainer = make_trainer(lora=LoraSettings(r=4, alpha=8, peft_type="LOHA"))
    assert trainer.adapter_size > 0
