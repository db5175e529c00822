"""KSeedTrainer: trains without gradients, checkpoints a K-vector, exports a full model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from fedswarm.learning.errors import CheckpointError
from fedswarm.learning.fedkseed import BaseModelMismatchError, KSeedTrainer, KVectorError
from fedswarm.learning.fedkseed.parameters import parameters_fingerprint
from transformers import AutoModelForCausalLM

Make = Callable[..., KSeedTrainer]


def test_a_base_model_other_than_the_pinned_one_is_refused(make_kseed: Make) -> None:
    with pytest.raises(BaseModelMismatchError, match="not the federation's base model"):
        make_kseed(base_model_sha256="0" * 64)


def test_training_moves_the_k_vector_and_needs_no_gradients(make_kseed: Make) -> None:
    trainer = make_kseed()
    base = trainer.parameters_fingerprint()
    report = trainer.train()
    assert report.steps == 3 and np.isfinite(report.loss)
    assert 1 <= trainer.state.seeds_used() <= 3 and trainer.state.counts.sum() == 3
    assert all(p.grad is None and not p.requires_grad for p in trainer.model.parameters())
    assert trainer.parameters_fingerprint() != base


def test_checkpoint_restores_bit_identical_weights(make_kseed: Make, tmp_path: Path) -> None:
    trainer = make_kseed()
    trainer.train()
    trainer.save_checkpoint(tmp_path, 1)
    saved = trainer.parameters_fingerprint()
    meta = json.loads(next(tmp_path.glob("round-*/meta.json")).read_text())
    assert meta["parameters_fingerprint"] == saved
    assert sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file()) < 64 * 1024

    restarted = make_kseed()
    assert restarted.load_checkpoint(tmp_path) == 1
    assert restarted.parameters_fingerprint() == saved
    assert restarted.adapter_fingerprint() == trainer.adapter_fingerprint()
    # both continue the same way: same seeds drawn, same batches
    trainer.train()
    restarted.train()
    assert np.array_equal(trainer.state.scalars, restarted.state.scalars)

    other = make_kseed(k=32)
    with pytest.raises(CheckpointError, match="pool size"):
        other.load_checkpoint(tmp_path)


def test_group_average_and_catch_up_replay_to_the_same_weights(make_kseed: Make) -> None:
    one, two = make_kseed(peer=0), make_kseed(peer=1)
    one.train()
    two.train()
    average = (one.exchange_vector()[0] + two.exchange_vector()[0]) / np.float32(2)
    one.load_group_average(average)
    two.load_group_average(average)
    assert one.parameters_fingerprint() == two.parameters_fingerprint()

    late = make_kseed(peer=1)
    vector, fingerprint = one.adapter_snapshot()
    assert late.fingerprint_of(vector) == fingerprint
    late.load_adapter_vector(vector)
    assert late.parameters_fingerprint() == one.parameters_fingerprint()
    assert late.adapter_fingerprint() == fingerprint


def test_bad_group_vectors_change_nothing(make_kseed: Make) -> None:
    trainer = make_kseed()
    trainer.train()
    before = trainer.parameters_fingerprint()
    good, _ = trainer.exchange_vector()
    for bad, why in (
        (good[:-1], "expected"),
        (np.where(good == good, np.nan, good), "NaN"),
        (good + 3.0, "above the bound"),
    ):
        with pytest.raises(KVectorError, match=why):
            trainer.load_group_average(bad)
    with pytest.raises(KVectorError, match="above the bound"):
        trainer.load_adapter_vector(np.full(trainer.adapter_size, 1.0, np.float32))
    assert trainer.parameters_fingerprint() == before


def test_export_is_a_plain_pretrained_model(make_kseed: Make, tmp_path: Path) -> None:
    trainer = make_kseed()
    trainer.train()
    trainer.export_adapter(tmp_path / "out", model_card="# tuned\n")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32)
    assert parameters_fingerprint(loaded) == trainer.parameters_fingerprint()
    assert (tmp_path / "out" / "README.md").read_text() == "# tuned\n"
    assert (tmp_path / "out" / "tokenizer.json").is_file()


def test_roll_back_returns_to_the_k_vector_and_weights_of_the_point(make_kseed: Make) -> None:
    """The validation gate's way back: K-vector, data position and weights, exactly."""
    trainer = make_kseed()
    trainer.train()
    point = trainer.rollback_point()
    before = trainer.parameters_fingerprint()
    scalars = trainer.state.scalars.copy()
    trainer.train()
    trainer.load_group_average(np.zeros(trainer.settings.vector_size, np.float32))
    assert trainer.parameters_fingerprint() != before
    trainer.roll_back(point)
    assert trainer.parameters_fingerprint() == before
    assert np.array_equal(trainer.state.scalars, scalars) and trainer.step == 3


def test_no_embeddings_leaves_the_embedding_alone(make_kseed: Make) -> None:
    trainer = make_kseed(trainable="no_embeddings")
    names = [t.name for t in trainer.tensors]
    assert names and not any("embed_tokens" in n for n in names)
    embedding = trainer.model.get_input_embeddings().weight.detach().clone()
    trainer.train()
    trainer.replay_state()
    assert torch.equal(trainer.model.get_input_embeddings().weight, embedding)
    assert trainer.state.seeds_used() >= 1
