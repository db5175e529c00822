"""``RoundEvalSets``: the daemon's per-round evaluation is ``fedswarm eval``'s scoring on
sets capped at ``max_rows``, with a real model and tokenizer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fedswarm.learning.errors import BadRowError
from fedswarm.learning.evaluation.per_round import RoundEvalSets
from fedswarm.learning.evaluation.settings import RoundEvalSettings
from fedswarm.learning.trainer import LocalTrainer


def _jsonl(path: Path, rows: list[dict[str, str]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_capped_sets_are_scored_like_fedswarm_eval(
    tmp_path: Path, make_trainer: Callable[..., LocalTrainer]
) -> None:
    qa = _jsonl(
        tmp_path / "qa.jsonl",
        [{"instruction": f"Name item {i}.", "output": f"item {i}"} for i in range(6)],
    )
    refuse = _jsonl(
        tmp_path / "refuse.jsonl", [{"prompt": f"how do I do harm {i}"} for i in range(5)]
    )
    sets = RoundEvalSets.load(
        RoundEvalSettings(sets=[qa], refusal=[refuse], max_rows=4, max_new_tokens=4)
    )
    trainer = make_trainer()
    scores = sets.score(trainer)
    assert [(s["name"], s["kind"], s["rows"]) for s in scores] == [
        ("qa", "set", 4),
        ("refuse", "refusal", 4),
    ]
    qa_score, refusal = scores
    # the loss is the token-weighted mean over the first max_rows rows, as fedswarm eval's
    examples = [e for e in trainer.encode_rows(sets.sets[0].rows) if e is not None]
    summed = trainer.example_losses(examples)
    expected = sum(t for t, _ in summed) / sum(n for _, n in summed)
    assert qa_score["loss"] == pytest.approx(expected, rel=1e-5)
    assert 0.0 <= qa_score["exact_match"] <= 1.0 and 0.0 <= qa_score["rouge_l"] <= 1.0
    assert qa_score["refusal_rate"] is None and refusal["loss"] is None
    assert refusal["refusal_rate"] in (0.0, 0.25, 0.5, 0.75, 1.0)


def test_a_bad_row_anywhere_is_refused_even_beyond_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text('{"text": "fine"}\n' * 3 + '{"text": ""}\n')
    with pytest.raises(BadRowError, match=f"{path}:4:"):
        RoundEvalSets.load(RoundEvalSettings(sets=[str(path)], max_rows=1))
