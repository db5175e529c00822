"""LocalTrainer: learning, state across rounds, adapter exchange, checkpoints, export."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from fedswarm.learning.adapter_vector import state_fingerprint
from fedswarm.learning.checkpoint_files import LATEST
from fedswarm.learning.errors import CheckpointError, LearningError
from fedswarm.learning.schedule import learning_rate
from fedswarm.learning.settings import DataSettings, LoraSettings, TrainSettings
from fedswarm.learning.trainer import LocalTrainer
from peft import PeftModel
from transformers import AutoModelForCausalLM

MakeTrainer = Callable[..., LocalTrainer]


def _states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_reduces_eval_loss_on_demo_data(make_trainer: MakeTrainer) -> None:
    steps: list[int] = []
    all_linear = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    trainer = make_trainer(lora=LoraSettings(r=8, alpha=16, target_modules=all_linear), lr=1e-2)
    trainer.on_step = lambda step, loss: steps.append(step)
    before = trainer.evaluate()
    report = trainer.train(40)
    after = trainer.evaluate()
    assert report.steps == 40 and report.tokens > 0
    assert steps == list(range(1, 41))
    assert after.loss < before.loss - 0.05
    assert after.perplexity < before.perplexity


def test_evaluation_records_no_autograd_graph(make_trainer: MakeTrainer) -> None:
    """Every round evaluates twice; with autograd on, each forward keeps its activations
    for a backward that never comes (a real model's eval then peaks far above training's
    memory per example) and warns about it in the daemon's log."""
    trainer = make_trainer()
    grad_enabled: list[bool] = []
    hook = trainer.model.get_input_embeddings().register_forward_hook(
        lambda module, args, output: grad_enabled.append(torch.is_grad_enabled()))
    try:
        trainer.evaluate()
    finally:
        hook.remove()
    assert grad_enabled and not any(grad_enabled)
    assert torch.is_grad_enabled()  # and training afterwards still records its graph
    assert trainer.train(1).steps == 1


def test_optimizer_state_carries_across_train_calls(make_trainer: MakeTrainer) -> None:
    split = make_trainer(warmup_steps=2, total_steps=10)
    split.train(2)
    split.train(3)
    whole = make_trainer(warmup_steps=2, total_steps=10)
    whole.train(5)
    assert split.step == 5
    first_param = split.optimizer.param_groups[0]["params"][0]
    assert int(split.optimizer.state[first_param]["step"]) == 5
    assert _states_equal(split.adapter_state(), whole.adapter_state())


def test_schedule_warms_up_then_decays_to_zero() -> None:
    cfg = TrainSettings(lr=1.0, warmup_steps=4, schedule="cosine", total_steps=14)
    assert learning_rate(0, cfg) == pytest.approx(0.25)
    assert learning_rate(3, cfg) == pytest.approx(1.0)
    assert learning_rate(9, cfg) == pytest.approx(0.5)
    assert learning_rate(20, cfg) == pytest.approx(0.0)
    assert learning_rate(9, TrainSettings(lr=1.0, warmup_steps=4, schedule="linear",
                                          total_steps=14)) == pytest.approx(0.5)


def test_adapter_state_is_sorted_cpu_float32_copy(make_trainer: MakeTrainer) -> None:
    trainer = make_trainer()
    state = trainer.adapter_state()
    assert list(state) == sorted(state) and all("lora_" in k for k in state)
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" for t in state.values())
    next(iter(state.values())).add_(1.0)
    assert not _states_equal(state, trainer.adapter_state())


def test_load_adapter_state_replaces_weights(make_trainer: MakeTrainer) -> None:
    source, target = make_trainer(), make_trainer(seed=1)
    source.train(2)
    target.load_adapter_state(source.adapter_state())
    assert state_fingerprint(target.adapter_state()) == state_fingerprint(source.adapter_state())


def test_adapter_vector_round_trips_and_the_trainer_reports_its_size_and_hash(
    make_trainer: MakeTrainer,
) -> None:
    source, target = make_trainer(), make_trainer(seed=1)
    source.train(2)
    vector, fingerprint = source.adapter_snapshot()
    np.testing.assert_array_equal(vector, source.adapter_vector())
    assert vector.size == source.adapter_size
    assert fingerprint == source.adapter_fingerprint() != target.adapter_fingerprint()
    target.load_adapter_vector(vector)
    assert target.adapter_fingerprint() == fingerprint


@pytest.mark.parametrize("damage", ["nan", "shape", "missing"])
def test_load_adapter_state_rejects_bad_input_and_keeps_weights(make_trainer: MakeTrainer,
                                                                damage: str) -> None:
    trainer = make_trainer()
    original = trainer.adapter_state()
    bad = {k: v.clone() for k, v in original.items()}
    last = sorted(bad)[-1]
    if damage == "nan":
        bad[last][0, 0] = float("nan")
    elif damage == "shape":
        bad[last] = torch.zeros(bad[last].shape[0] + 1, bad[last].shape[1])
    else:
        del bad[last]
    for k in sorted(bad)[:-1]:
        bad[k].fill_(7.0)  # would be visible if a partial write happened
    with pytest.raises(LearningError):
        trainer.load_adapter_state(bad)
    assert _states_equal(trainer.adapter_state(), original)


def test_fedprox_keeps_adapter_closer_to_the_anchor(make_trainer: MakeTrainer) -> None:
    def drift(mu: float) -> float:
        trainer = make_trainer(fedprox_mu=mu, lr=1e-2)
        start = trainer.adapter_state()
        trainer.train(3)
        end = trainer.adapter_state()
        return sum(float((end[k] - start[k]).pow(2).sum()) for k in start)

    assert drift(100.0) < drift(0.0)


def test_checkpoint_resume_gives_same_adapter_and_next_loss(make_trainer: MakeTrainer,
                                                            tmp_path: Path) -> None:
    original = make_trainer()
    original.train(3)
    original.save_checkpoint(tmp_path / "ckpt", round=4)
    resumed = make_trainer(seed=0)
    assert resumed.load_checkpoint(tmp_path / "ckpt") == 4
    assert resumed.step == 3
    assert _states_equal(resumed.adapter_state(), original.adapter_state())
    assert resumed.train(1).loss == pytest.approx(original.train(1).loss, rel=1e-6)
    assert _states_equal(resumed.adapter_state(), original.adapter_state())


def test_newer_checkpoint_wins_and_old_rounds_are_pruned(make_trainer: MakeTrainer,
                                                         tmp_path: Path) -> None:
    trainer = make_trainer()
    for rnd in range(1, 5):
        trainer.save_checkpoint(tmp_path, round=rnd)
    assert sorted(p.name for p in tmp_path.glob("round-*")) == ["round-000003", "round-000004"]
    assert trainer.load_checkpoint(tmp_path) == 4


def test_corrupt_checkpoint_raises_checkpoint_error(make_trainer: MakeTrainer,
                                                    tmp_path: Path) -> None:
    trainer = make_trainer()
    trainer.save_checkpoint(tmp_path, round=1)
    weights = next(tmp_path.glob("round-000001/adapter/*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        trainer.load_checkpoint(tmp_path)


def test_missing_checkpoint_raises_checkpoint_error(make_trainer: MakeTrainer,
                                                    tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        make_trainer().load_checkpoint(tmp_path)


def test_unfinished_save_is_ignored(make_trainer: MakeTrainer, tmp_path: Path) -> None:
    """What a kill -9 mid-save leaves behind (a temp dir, or a renamed round dir that
    LATEST does not name yet) must not be picked up by the next load."""
    trainer = make_trainer()
    trainer.save_checkpoint(tmp_path, round=1)
    saved = trainer.adapter_state()
    (tmp_path / ".round-000002.tmp-x").mkdir()
    (tmp_path / ".round-000002.tmp-x" / "trainer_state.pt").write_bytes(b"partial")
    (tmp_path / "round-000002").mkdir()
    assert (tmp_path / LATEST).read_text().strip() == "round-000001"
    trainer.train(1)
    assert trainer.load_checkpoint(tmp_path) == 1
    assert _states_equal(trainer.adapter_state(), saved)


def test_export_round_trip_gives_identical_logits(make_trainer: MakeTrainer,
                                                  demo_model_dir: Path, tmp_path: Path) -> None:
    trainer = make_trainer()
    trainer.train(3)
    trainer.export_adapter(tmp_path / "export")
    base = AutoModelForCausalLM.from_pretrained(str(demo_model_dir))
    reloaded = PeftModel.from_pretrained(base, str(tmp_path / "export")).eval()
    trainer.model.eval()
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45]])
    with torch.no_grad():
        expected = trainer.model(input_ids=ids).logits
        got = reloaded(input_ids=ids).logits
    assert torch.allclose(expected, got, atol=1e-6)


def test_generate_returns_one_completion_per_prompt(make_trainer: MakeTrainer) -> None:
    out = make_trainer().generate(["At the Northfield", "The pilot"], max_new_tokens=5)
    assert len(out) == 2 and all(isinstance(s, str) for s in out)


def test_num_train_samples_counts_training_rows(make_trainer: MakeTrainer,
                                                demo_shard_dir: Path, tmp_path: Path) -> None:
    train = tmp_path / "t.jsonl"
    train.write_text("".join(f'{{"text": "row {i} of the data"}}\n' for i in range(20)))
    trainer = make_trainer(data=DataSettings(str(train), eval_fraction=0.25, max_length=16))
    assert trainer.num_train_samples == 15
