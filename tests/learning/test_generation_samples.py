"""LocalTrainer.sample_outputs: the dashboard's generation samples."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from fedswarm.learning.examples import instruction_prompt
from fedswarm.learning.settings import DataSettings, TrainSettings
from fedswarm.learning.trainer import LocalTrainer

MakeTrainer = Callable[..., LocalTrainer]


def _randomise_adapter(trainer: LocalTrainer) -> None:
    """A fresh LoRA adapter is a no-op (B = 0); random weights make its effect visible."""
    rng = torch.Generator().manual_seed(0)
    trainer.load_adapter_state({name: torch.randn(t.shape, generator=rng)
                                for name, t in trainer.adapter_state().items()})


def test_text_samples_continue_the_first_eval_blocks(make_trainer: MakeTrainer,
                                                     demo_shard_dir: Path) -> None:
    trainer = make_trainer()
    untrained = trainer.sample_outputs(3, 8)
    _randomise_adapter(trainer)
    samples = trainer.sample_outputs(3, 8)

    assert len(samples) == 3
    first_row = json.loads((next(demo_shard_dir.glob("peer-0-*")) / "eval.jsonl")
                           .read_text().splitlines()[0])["text"]
    assert samples[0][0] != "" and first_row.startswith(samples[0][0])
    for (prompt, output), example in zip(samples, trainer.data.eval, strict=False):
        block = trainer.tokenizer.decode(example.input_ids, skip_special_tokens=True)
        assert block.startswith(prompt) and len(prompt) < len(block) and output
    # The first block starts with BOS and a whole row, so generate() sees the same ids.
    assert trainer.generate([samples[0][0]], 8) == [samples[0][1]]
    assert trainer.sample_outputs(3, 8) == samples  # deterministic
    assert [o for _, o in samples] != [o for _, o in untrained]  # uses the current adapter


def test_instruction_samples_prompt_is_the_rendered_instruction(
        make_trainer: MakeTrainer, tmp_path: Path) -> None:
    rows = [{"instruction": f"Name airport {i}", "input": f"region {i}" if i % 2 else "",
             "output": f"Airport {i} is Northfield."} for i in range(10)]
    train, evaluation = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:7]))
    evaluation.write_text("".join(json.dumps(r) + "\n" for r in rows[7:]))
    trainer = make_trainer(data=DataSettings(str(train), str(evaluation), max_length=64))

    samples = trainer.sample_outputs(5, 4)  # only three eval rows exist
    assert [p for p, _ in samples] == [instruction_prompt(r["instruction"], r["input"])
                                       for r in rows[7:]]
    assert all(isinstance(o, str) and o for _, o in samples)
    # Batched with left padding, each is still the prompt's own greedy completion.
    assert [o for _, o in samples] == [trainer.generate([p], 4)[0] for p, _ in samples]


@pytest.mark.parametrize("training", [True, False])
def test_sampling_restores_train_or_eval_mode(make_trainer: MakeTrainer, training: bool) -> None:
    trainer = make_trainer()
    trainer.model.train(training)
    trainer.sample_outputs(1, 2)
    assert trainer.model.training is training


def test_zero_samples_or_no_eval_data_gives_none(make_trainer: MakeTrainer,
                                                 demo_shard_dir: Path) -> None:
    assert make_trainer().sample_outputs(0, 8) == []
    shard = next(demo_shard_dir.glob("peer-0-*"))
    no_eval = make_trainer(data=DataSettings(str(shard / "train.jsonl"), eval_fraction=0.0,
                                             max_length=64))
    assert no_eval.sample_outputs(2, 8) == []


def test_bad_arguments_are_refused(make_trainer: MakeTrainer) -> None:
    trainer = make_trainer()
    with pytest.raises(ValueError, match="n:"):
        trainer.sample_outputs(-1, 8)
    with pytest.raises(ValueError, match="max_new_tokens"):
        trainer.sample_outputs(1, 0)


def test_sample_settings_default_and_bounds() -> None:
    settings = TrainSettings()
    assert (settings.samples_per_round, settings.sample_max_new_tokens) == (2, 32)
    assert TrainSettings(samples_per_round=0).samples_per_round == 0
    assert TrainSettings(samples_per_round=16, sample_max_new_tokens=256).samples_per_round == 16
    for bad in ({"samples_per_round": -1}, {"samples_per_round": 17}):
        with pytest.raises(ValueError, match=r"train\.samples_per_round"):
            TrainSettings(**bad)  # type: ignore[arg-type]
    for bad in ({"sample_max_new_tokens": 0}, {"sample_max_new_tokens": 257}):
        with pytest.raises(ValueError, match=r"train\.sample_max_new_tokens"):
            TrainSettings(**bad)  # type: ignore[arg-type]
