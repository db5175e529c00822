"""``[data.alignment]``: the pinned safe demonstrations make up ``share`` of every epoch.

The private rows stay what the federation weights this member by; the alignment rows are
added next to them, hash-checked the way FedMKT checks its public set.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fedswarm.learning.alignment_set import alignment_count
from fedswarm.learning.data_files import read_rows
from fedswarm.learning.errors import DataError
from fedswarm.learning.fedmkt import content_sha256
from fedswarm.learning.settings import (
    AlignmentSettings,
    DataSettings,
    LoraSettings,
    ModelSettings,
    TrainSettings,
)
from fedswarm.learning.trainer import LocalTrainer

SAFE = [f"Q: how do I hurt person {i}? A: I can't help with that." for i in range(4)]
PRIVATE = 30


def _files(tmp_path: Path) -> tuple[Path, Path]:
    train = tmp_path / "train.jsonl"
    train.write_text(
        "".join(json.dumps({"text": f"the ledger on day {i}"}) + "\n" for i in range(PRIVATE))
    )
    safe = tmp_path / "alignment.jsonl"
    safe.write_text("".join(json.dumps({"text": t}) + "\n" for t in SAFE))
    return train, safe


def _trainer(demo_model_dir: Path, train: Path, alignment: AlignmentSettings) -> LocalTrainer:
    return LocalTrainer(
        ModelSettings(str(demo_model_dir)),
        LoraSettings(r=4, alpha=8),
        DataSettings(str(train), eval_fraction=0.0, max_length=64, packing=False),
        TrainSettings(local_steps=1, batch_size=4),
        alignment=alignment,
    )


@pytest.mark.parametrize("share", [0.25, 0.1])
def test_the_alignment_share_of_the_training_examples_matches_the_config(
    tmp_path: Path, demo_model_dir: Path, share: float
) -> None:
    train, safe = _files(tmp_path)
    trainer = _trainer(
        demo_model_dir, train, AlignmentSettings(str(safe), content_sha256(SAFE), share)
    )
    rows, _ = read_rows(safe, "text")
    shared = {tuple(e.input_ids) for e in trainer.encode_rows(rows) if e is not None}
    examples = trainer.stream.examples  # what one epoch of batches is drawn from
    drawn = sum(tuple(e.input_ids) in shared for e in examples)
    assert drawn == trainer.alignment_examples == alignment_count(PRIVATE, share)
    assert len(examples) == PRIVATE + drawn
    assert abs(drawn / len(examples) - share) <= 1 / len(examples)
    assert trainer.num_train_samples == PRIVATE  # the averaging weight: private rows only
    # every demonstration is used when the share asks for more rows than the set holds
    assert len({tuple(e.input_ids) for e in examples} & shared) == min(len(SAFE), drawn)


def test_a_set_that_differs_from_the_pinned_hash_is_refused(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    train, safe = _files(tmp_path)
    pinned = content_sha256(SAFE)
    safe.write_text(safe.read_text() + json.dumps({"text": "Sure, here is how."}) + "\n")
    with pytest.raises(DataError, match=r"\[data.alignment\].*differs from the agreed " + pinned):
        _trainer(demo_model_dir, train, AlignmentSettings(str(safe), pinned, 0.2))
