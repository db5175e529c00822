"""What the daemon's round runner asks of a trainer, for both offsite roles: checkpoint
and restore (atomic, via checkpoint_files), roll back, fingerprint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fedswarm.learning.checkpoint_files import LATEST
from fedswarm.learning.errors import CheckpointError
from fedswarm.learning.offsite import OffsitePackage, OffsiteTrainer, OwnerModel
from fedswarm.learning.offsite.owner_trainer import OwnerTrainer
from fedswarm.learning.settings import DataSettings, TrainSettings


def _data(shard: Path) -> DataSettings:
    return DataSettings(str(shard / "train.jsonl"), str(shard / "eval.jsonl"), max_length=48)


_TRAIN = TrainSettings(local_steps=2, batch_size=4, lr=3e-3, eval_batches=1)


@pytest.fixture
def shard(demo_shard_dir: Path) -> Path:
    return next(demo_shard_dir.glob("peer-0-*"))


def test_member_checkpoint_restores_adapter_layers_optimiser_and_step(
    package: OffsitePackage, shard: Path, tmp_path: Path
) -> None:
    trainer = OffsiteTrainer(package, _data(shard), _TRAIN, device="cpu")
    trainer.train()
    trainer.save_checkpoint(tmp_path / "ckpt", 3)
    saved, fingerprint = trainer.adapter_snapshot()
    assert (tmp_path / "ckpt" / LATEST).read_text().strip() == "round-000003"
    assert trainer.fingerprint_of(saved) == fingerprint == trainer.adapter_fingerprint()

    fresh = OffsiteTrainer(package, _data(shard), _TRAIN, device="cpu")
    assert fresh.adapter_fingerprint() != fingerprint
    assert fresh.load_checkpoint(tmp_path / "ckpt") == 3
    assert np.array_equal(fresh.adapter_vector(), saved)
    assert fresh.step == trainer.step == 2
    assert fresh.train().loss == pytest.approx(trainer.train().loss, rel=1e-5)


def test_member_roll_back_returns_to_the_point(package: OffsitePackage, shard: Path) -> None:
    trainer = OffsiteTrainer(package, _data(shard), _TRAIN, device="cpu")
    point, before = trainer.rollback_point(), trainer.adapter_vector()
    trainer.train()
    assert not np.array_equal(trainer.adapter_vector(), before)
    trainer.roll_back(point)
    assert np.array_equal(trainer.adapter_vector(), before) and trainer.step == 0


def test_a_corrupted_member_checkpoint_is_refused(
    package: OffsitePackage, shard: Path, tmp_path: Path
) -> None:
    trainer = OffsiteTrainer(package, _data(shard), _TRAIN, device="cpu")
    trainer.save_checkpoint(tmp_path / "ckpt", 1)
    state = next((tmp_path / "ckpt" / "round-000001").glob("*.pt"))
    state.write_bytes(state.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(CheckpointError, match="corrupt"):
        trainer.load_checkpoint(tmp_path / "ckpt")


def test_owner_checkpoint_holds_the_plugged_in_vector_not_the_model(
    deep_model_dir: Path, package: OffsitePackage, shard: Path, tmp_path: Path
) -> None:
    owner = OwnerTrainer(OwnerModel(deep_model_dir, package, device="cpu"), _data(shard), _TRAIN)
    assert owner.num_train_samples == 0
    before = owner.evaluate().loss
    changed = owner.adapter_vector() + np.float32(0.01)
    owner.load_adapter_vector(changed)
    assert owner.evaluate().loss != before
    owner.save_checkpoint(tmp_path / "ckpt", 2)
    files = [p for p in (tmp_path / "ckpt").rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 2 * changed.nbytes

    again = OwnerTrainer(OwnerModel(deep_model_dir, package, device="cpu"), _data(shard), _TRAIN)
    assert again.load_checkpoint(tmp_path / "ckpt") == 2
    assert np.array_equal(again.adapter_vector(), changed)
    assert again.evaluate().loss == pytest.approx(owner.evaluate().loss)
