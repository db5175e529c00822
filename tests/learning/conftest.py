"""Shared fixtures: the demo model is built once per session into a temp dir.

Nothing is ever downloaded: HF_HUB_OFFLINE is set before transformers is imported.
The session model uses a short pre-training so the whole suite stays fast; the tests
only need a real, loadable Llama-style model and tokenizer, not a good one.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from fedswarm.learning.demo_assets import build_demo_model, write_demo_shards
from fedswarm.learning.settings import (
    DataSettings,
    LoraSettings,
    ModelSettings,
    PrivacySettings,
    TrainSettings,
)
from fedswarm.learning.trainer import LocalTrainer

TEST_PRETRAIN_STEPS = 40

# CI boxes have 2 cores shared with other test processes; intra-op threads fighting
# over them make every step many times slower. The library never sets this itself.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_model(tmp_path_factory.mktemp("demo") / "model",
                            pretrain_steps=TEST_PRETRAIN_STEPS)


@pytest.fixture(scope="session")
def demo_shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    write_demo_shards(out, 2)
    return out


@pytest.fixture
def make_trainer(demo_model_dir: Path, demo_shard_dir: Path) -> Callable[..., LocalTrainer]:
    """Factory for small trainers on the first demo shard; keyword overrides go to
    TrainSettings, except ``lora``, ``data`` and ``privacy``, which replace those settings,
    and ``freeze_lora_a`` and ``scaffold``, which go to the trainer."""
    shard = next(demo_shard_dir.glob("peer-0-*"))

    def make(lora: LoraSettings | None = None, data: DataSettings | None = None,
             privacy: PrivacySettings | None = None, freeze_lora_a: bool = False,
             scaffold: bool = False, **train: object) -> LocalTrainer:
        settings = {"local_steps": 3, "batch_size": 4, "lr": 3e-3, "eval_batches": 2, **train}
        return LocalTrainer(
            ModelSettings(str(demo_model_dir)),
            lora or LoraSettings(r=4, alpha=8),
            data or DataSettings(str(shard / "train.jsonl"), str(shard / "eval.jsonl"),
                                 max_length=64),
            TrainSettings(**settings),  # type: ignore[arg-type]
            privacy=privacy, freeze_lora_a=freeze_lora_a, scaffold=scaffold,
        )

    return make
