"""The quality benchmark's optimiser-state experiment really averages AdamW moments.

It is the lever recorded in docs/results.md for the fed/central gap, so it must do what
it says: after the call every member holds the element-wise mean of the members'
``exp_avg`` and ``exp_avg_sq``, and the adapters themselves are left alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from fedswarm.bench.quality_inprocess import average_adam_moments
from fedswarm.bench.quality_setup import RunSettings, make_trainer
from fedswarm.daemon.federation_runner import demo_model_cache_dir
from fedswarm.learning.demo_assets import build_demo_model, write_demo_shards

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_members_end_with_the_mean_of_their_adam_moments(tmp_path: Path) -> None:
    model_dir = build_demo_model(demo_model_cache_dir())
    shards = write_demo_shards(tmp_path, 2)
    settings = RunSettings(rounds=1, local_steps=1, batch_size=2, max_length=32)
    trainers = [make_trainer(model_dir, settings, s.train_path, s.eval_path, seed=i)
                for i, s in enumerate(shards)]
    for trainer in trainers:
        trainer.train(2)  # LoRA's A gets no gradient while B is still zero
    adapters = [trainer.adapter_state() for trainer in trainers]

    def moments(trainer: object, key: str) -> list[torch.Tensor]:
        optimizer = trainer.optimizer  # type: ignore[attr-defined]
        return [optimizer.state[p][key].clone() for p in optimizer.param_groups[0]["params"]]

    before = {key: [moments(t, key) for t in trainers] for key in ("exp_avg", "exp_avg_sq")}
    first, second = before["exp_avg"]
    assert any(not torch.equal(a, b) for a, b in zip(first, second, strict=True))  # domains differ

    average_adam_moments(trainers)

    for key, (first, second) in before.items():
        for index, (a, b) in enumerate(zip(first, second, strict=True)):
            expected = (a + b) / 2
            for trainer in trainers:
                assert torch.allclose(moments(trainer, key)[index], expected), key
    for trainer, adapter in zip(trainers, adapters, strict=True):
        after = trainer.adapter_state()
        assert all(torch.equal(after[name], adapter[name]) for name in adapter)
