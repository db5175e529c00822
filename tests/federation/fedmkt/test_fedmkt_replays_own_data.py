"""A FedMKT member replays its own training examples while it distils (issue #26)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fedswarm.federation.fedmkt.settings import FedMKTSection
from fedswarm.federation.modes import fedmkt as fedmkt_mode
from fedswarm.learning.examples import Example


class _Captured(Exception):
    """Stops the round once the exchange has been handed its learner."""


async def _learner_of_one_round(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                section: FedMKTSection) -> Any:
    captured: dict[str, Any] = {}

    async def exchange(ctx: Any, learner: Any, secure_average: Any) -> Any:
        captured["learner"] = learner
        raise _Captured

    monkeypatch.setattr(fedmkt_mode, "run_fedmkt_exchange", exchange)
    monkeypatch.setattr(fedmkt_mode, "load_public_dataset", lambda *a, **k: object())
    examples = [Example([5, 6, 7], [5, 6, 7]), Example([8, 9], [-100, 9])]
    trainer = SimpleNamespace(model=object(), tokenizer=object(),
                              data=SimpleNamespace(train=examples))
    parts = SimpleNamespace(trainer=trainer, secure=None, work_dir=tmp_path, seed=3)
    mode = fedmkt_mode.FedMKTDistillation(parts, section)  # type: ignore[arg-type]
    with pytest.raises(_Captured):
        await mode.combine(SimpleNamespace(round=2), 1.0)  # type: ignore[arg-type]
    return captured["learner"]


async def test_distillation_batches_replay_the_members_own_training_examples(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    learner = await _learner_of_one_round(monkeypatch, tmp_path, FedMKTSection())
    assert learner.section.settings().replay_fraction == 0.75
    assert [list(ids) for ids in learner.replay_ids] == [[5, 6, 7], [8, 9]]


async def test_replay_off_hands_no_private_examples_to_distillation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    learner = await _learner_of_one_round(
        monkeypatch, tmp_path, FedMKTSection(replay_fraction=0.0))
    assert list(learner.replay_ids) == []
