"""End to end: ``fedswarm run`` stops training at the DP budget and a restart spends no more.

A one-member federation (every round is local only) with a budget that covers exactly
two rounds of two steps: the third round logs the one line and trains no more; a second
run with more rounds replays the persisted spend and trains not one step.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w
from fedswarm.daemon.state import StateStore
from fedswarm.learning.privacy import Spend, epsilon_of

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROWS = 20
SIGMA = 2.0
DELTA = 1e-3


def _configure(config: Path, rounds: int) -> None:
    eval_path = config.parent / "eval.jsonl"
    eval_path.write_text('{"text": "good evening world"}\n' * 4)
    train_path = config.parent / "train.jsonl"
    train_path.write_text("".join(f'{{"text": "hello world number {i}"}}\n' for i in range(ROWS)))
    document = tomllib.loads(config.read_text())
    document["federation"].update(rounds=rounds, after_rounds="exit", round_deadline_s=1.0,
                                  secure_aggregation="none")
    document["train"].update(local_steps=2, batch_size=2, samples_per_round=0)
    document["data"].update(train_path=str(train_path), eval_path=str(eval_path), packing=False)
    two_rounds = epsilon_of([Spend(SIGMA, 2 / ROWS, 4)], DELTA)
    document["privacy"] = {"enabled": True, "noise_multiplier": SIGMA, "delta": DELTA,
                           "target_epsilon": two_rounds * (1 + 1e-9)}
    config.write_text(tomli_w.dumps(document))


def _run(config: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "fedswarm.daemon.cli", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, HF_HUB_OFFLINE="1"), stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def _spent_steps(config: Path) -> int:
    store = StateStore.open(config.parent / "state")
    try:
        return sum(steps for steps, _, _ in store.privacy_spend())
    finally:
        store.close()


def test_training_stops_at_the_budget_and_a_restart_spends_nothing(node_config: Path) -> None:
    _configure(node_config, rounds=4)
    first = _run(node_config)
    assert _spent_steps(node_config) == 4
    assert first.count("privacy budget spent") == 1, first[-3000:]
    assert "still serving and averaging" in first

    _configure(node_config, rounds=6)
    second = _run(node_config)
    assert _spent_steps(node_config) == 4  # replayed, not re-spent
    assert second.count("privacy budget spent") == 1, second[-3000:]
