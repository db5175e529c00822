"""A FedKSeed trainer on the session's demo model, with its base hash pinned."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fedswarm.learning.fedkseed import BaseModelMismatchError, KSeedSettings, KSeedTrainer
from fedswarm.learning.settings import DataSettings, ModelSettings, TrainSettings

FEDERATION = "fed-test"


@pytest.fixture(scope="session")
def demo_base_sha256(demo_model_dir: Path, demo_shard_dir: Path) -> str:
    """The demo model's hash, read from the refusal of a trainer with none pinned."""
    shard = next(demo_shard_dir.glob("peer-0-*"))
    with pytest.raises(BaseModelMismatchError, match="not set") as refused:
        KSeedTrainer(
            ModelSettings(str(demo_model_dir)),
            DataSettings(str(shard / "train.jsonl"), str(shard / "eval.jsonl")),
            TrainSettings(),
            KSeedSettings(),
            FEDERATION,
        )
    return str(refused.value).split("hashes to ")[1].split(":")[0]


@pytest.fixture
def make_kseed(
    demo_model_dir: Path, demo_shard_dir: Path, demo_base_sha256: str
) -> Callable[..., KSeedTrainer]:
    """Factory: ``peer`` picks the demo shard and train seed, ``device`` the model's
    device, other keywords go to ``KSeedSettings``."""

    def make(peer: int = 0, device: str = "auto", **settings: object) -> KSeedTrainer:
        shard = next(demo_shard_dir.glob(f"peer-{peer % 2}-*"))  # the session writes 2 shards
        values = {
            "k": 64,
            "lr": 2e-4,
            "steps_per_round": 3,
            "base_model_sha256": demo_base_sha256,
            **settings,
        }
        return KSeedTrainer(
            ModelSettings(str(demo_model_dir), device=device),
            DataSettings(str(shard / "train.jsonl"), str(shard / "eval.jsonl"), max_length=64),
            TrainSettings(batch_size=4, eval_batches=2, seed=peer),
            KSeedSettings(**values),  # type: ignore[arg-type]
            FEDERATION,
        )

    return make
