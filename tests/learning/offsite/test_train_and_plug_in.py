"""Members train the adapter layers on the emulator; the owner plugs them into its model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fedswarm.learning.errors import LearningError
from fedswarm.learning.offsite import OffsitePackage, OffsiteTrainer, OwnerModel
from fedswarm.learning.settings import DataSettings, LoraSettings, TrainSettings
from transformers import AutoModelForCausalLM


def _trainer(
    package: OffsitePackage, shard: Path, lora: LoraSettings | None = None
) -> OffsiteTrainer:
    return OffsiteTrainer(
        package,
        DataSettings(str(shard / "train.jsonl"), str(shard / "eval.jsonl"), max_length=48),
        TrainSettings(local_steps=2, batch_size=4, lr=3e-3, eval_batches=1),
        lora=lora,
        device="cpu",
    )


@pytest.fixture
def shard(demo_shard_dir: Path) -> Path:
    return next(demo_shard_dir.glob("peer-0-*"))


def test_only_the_adapter_layers_train(package: OffsitePackage, shard: Path) -> None:
    trainer = _trainer(package, shard)
    frozen_before = trainer.model.model.layers[2].self_attn.q_proj.weight.clone()
    before = trainer.adapter_vector()
    trainer.train()
    after = trainer.adapter_vector()
    assert after.shape == before.shape
    assert not np.array_equal(after, before)
    assert torch.equal(trainer.model.model.layers[2].self_attn.q_proj.weight, frozen_before)
    assert all(
        n.startswith("model.layers.") and int(n.split(".")[2]) in (0, 1, 4, 5)
        for n in trainer.adapter_state()
    )


@pytest.mark.parametrize("lora", [None, LoraSettings(r=2, alpha=4)], ids=["layers", "lora"])
def test_owner_plugs_the_averaged_adapters_into_the_full_model_and_exports_it(
    package: OffsitePackage,
    shard: Path,
    deep_model_dir: Path,
    tmp_path: Path,
    lora: LoraSettings | None,
) -> None:
    trainer = _trainer(package, shard, lora)
    trainer.train()
    owner = OwnerModel(deep_model_dir, package, lora, device="cpu")
    middle_before = owner.model.model.layers[3].mlp.up_proj.weight.clone()
    owner.plug_in_vector(trainer.adapter_vector())
    for full, weights in trainer.adapter_layer_weights().items():
        got = owner.model.model.layers[full].state_dict()
        assert all(torch.allclose(got[k], v) for k, v in weights.items())
    assert torch.equal(owner.model.model.layers[3].mlp.up_proj.weight, middle_before)
    owner.export(tmp_path / "plugged")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "plugged", dtype=torch.float32)
    assert torch.allclose(
        again.model.layers[7].mlp.down_proj.weight, owner.model.model.layers[7].mlp.down_proj.weight
    )
    assert again.config.num_hidden_layers == 8


def test_a_vector_of_the_wrong_size_is_refused(package: OffsitePackage, shard: Path) -> None:
    trainer = _trainer(package, shard)
    with pytest.raises(LearningError, match="manifest needs"):
        trainer.load_adapter_vector(np.zeros(7, dtype=np.float32))
