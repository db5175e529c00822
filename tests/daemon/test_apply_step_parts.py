"""The round's "apply" step is measured part by part and recorded with the round.

Operators saw 5.9-14.8 s of "apply" per round against 0.6-3.3 s of secure aggregation
and could not tell what it was. The round runner now times each part (apply, eval,
samples, checkpoint, publish) into the round log's ``apply_parts``, and a round that
applied nothing reuses the evaluation it made after training instead of evaluating
the same model twice. A trainer that sleeps a known time in each part makes the
attribution checkable without a model.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fedswarm.daemon.events import EventBus
from fedswarm.daemon.round_runner import ApplyParts, MemberServices, RoundRunner
from fedswarm.daemon.state import StateStore
from fedswarm.federation.exchange import Combined
from fedswarm.federation.mailbox import Mailbox

EVAL_S, SAMPLES_S, CHECKPOINT_S = 0.15, 0.05, 0.1


class SlowTrainer:
    """Sleeps a known time in evaluation, sampling and checkpointing; counts evaluations."""

    num_train_samples = 10
    adapter_size = 4

    def __init__(self) -> None:
        self.evaluations = 0

    def evaluate(self) -> Any:
        self.evaluations += 1
        time.sleep(EVAL_S)
        return SimpleNamespace(loss=1.0)

    def sample_outputs(self, n: int, max_new_tokens: int) -> list[tuple[str, str]]:
        time.sleep(SAMPLES_S)
        return [("prompt", "output")] * n

    def save_checkpoint(self, directory: Path, round: int) -> None:
        time.sleep(CHECKPOINT_S)

    def adapter_snapshot(self) -> tuple[np.ndarray, str]:
        return np.zeros(4, np.float32), "fp"


def _runner(tmp_path: Path, trainer: SlowTrainer) -> tuple[RoundRunner, StateStore]:
    store = StateStore.open(tmp_path)
    services = MemberServices(
        me="me",
        config=SimpleNamespace(  # type: ignore[arg-type]
            federation=SimpleNamespace(max_eval_loss_increase=None, rounds=0, group_size=4,
                                       round_deadline_s=1.0, final_averaging_rounds=0,
                                       mode="lora_avg", heartbeat_s=2.0),
            train=SimpleNamespace(samples_per_round=2, sample_max_new_tokens=8),
            state_dir=tmp_path,
        ),
        trainer=trainer,  # type: ignore[arg-type]
        store=store,
        events=EventBus(),
        mailbox=Mailbox(max_bytes_per_sender_per_round=1 << 20),
        link=None,  # type: ignore[arg-type]
        exchange=SimpleNamespace(train=lambda: 0.5),  # type: ignore[arg-type]
        adapters=None,  # type: ignore[arg-type]
        view=dict,
        heartbeat_interval=lambda: 2.0,
        is_member=lambda peer: True,
        up_members=lambda: ["me"],  # alone: no group can form
        planning_members=lambda: ["me"],
        set_phase=lambda phase: None,
        reject=lambda *args: None,
        stopping=asyncio.Event(),
    )
    return RoundRunner(services), store


async def test_a_round_records_where_its_apply_time_went(tmp_path: Path) -> None:
    trainer = SlowTrainer()
    runner, store = _runner(tmp_path, trainer)
    try:
        await runner.run_round(1)
        record = store.round_record(1)
    finally:
        store.close()
    assert record is not None and record.status == "local_only"
    parts = record.apply_parts
    assert parts is not None and set(parts) == {"samples", "checkpoint", "publish"}, parts
    # Nothing was applied: the evaluation after training stands, none is repeated.
    assert trainer.evaluations == 1
    assert parts["samples"] >= SAMPLES_S and parts["checkpoint"] >= CHECKPOINT_S
    assert record.apply_s is not None and record.apply_s >= sum(parts.values()) - 0.01


async def test_an_applied_result_is_evaluated_once_more_and_timed_as_eval(
    tmp_path: Path,
) -> None:
    trainer = SlowTrainer()
    runner, store = _runner(tmp_path, trainer)
    try:
        parts = ApplyParts()
        combined = Combined(record={}, carried_weight=10.0, apply=lambda: time.sleep(0.05))
        _, status, _, eval_after = await runner._apply(1, combined, 1.0, None, parts)
        await runner._checkpoint(1, eval_after, parts)
    finally:
        store.close()
    assert status == "complete" and trainer.evaluations == 1
    assert parts.seconds["eval"] >= EVAL_S and parts.seconds["apply"] >= 0.05
    assert list(parts.seconds) == ["apply", "eval", "samples", "checkpoint", "publish"]
    assert "eval 0.1" in parts.describe() or "eval 0.2" in parts.describe()


def test_the_round_log_migrates_to_hold_apply_parts(tmp_path: Path) -> None:
    """A database from before apply_parts opens, gains the column and keeps its rows."""
    import sqlite3

    from fedswarm.daemon.state import MIGRATIONS

    path = tmp_path / "fedswarm.sqlite"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[1])
    db.execute("INSERT INTO rounds (round, status, started_at, apply_s) "
               "VALUES (1, 'complete', 0, 2.5)")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    store = StateStore.open(tmp_path)
    try:
        old = store.round_record(1)
        store.begin_round(2)
        store.update_round(2, status="complete", apply_parts={"eval": 1.5})
        new = store.round_record(2)
    finally:
        store.close()
    assert old is not None and old.apply_s == 2.5 and old.apply_parts is None
    assert new is not None and new.apply_parts == pytest.approx({"eval": 1.5})
