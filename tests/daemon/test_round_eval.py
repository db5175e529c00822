"""``[eval]``: the round loop scores the configured sets and keeps each round's numbers.

The scoring itself is ``fedswarm eval``'s (tests/learning/test_round_eval_scores.py runs it on
a real model); here the runner's side: which rounds are scored (``every_rounds``, and never a
round that changed nothing), where the time goes (``apply_parts["eval_sets"]``), that a
failure is a log line and not the end of the round, the database's migration, the config
check's one-line refusal of a bad file, and the dashboard's view of the scores.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fedswarm.daemon.events import EventBus
from fedswarm.daemon.round_runner import MemberServices, RoundRunner
from fedswarm.daemon.state import MIGRATIONS, StateStore
from fedswarm.daemon.views.status import DaemonStatusView
from fedswarm.federation.mailbox import Mailbox
from fedswarm.learning.evaluation.settings import RoundEvalSettings

RunCli = Callable[..., subprocess.CompletedProcess[str]]
OneLineError = Callable[..., str]


class Trainer:
    num_train_samples = 10
    adapter_size = 4

    def evaluate(self) -> Any:
        return SimpleNamespace(loss=1.0)

    def sample_outputs(self, n: int, max_new_tokens: int) -> list[tuple[str, str]]:
        return []

    def save_checkpoint(self, directory: Path, round: int) -> None:
        pass

    def adapter_snapshot(self) -> tuple[np.ndarray, str]:
        return np.zeros(4, np.float32), "fp"


class Sets:
    """Stands in for ``RoundEvalSets``: counts calls, scores 1/round, or fails on demand."""

    def __init__(self, settings: RoundEvalSettings) -> None:
        self.settings = settings
        self.scored: list[int] = []
        self.fail = False

    def score(self, trainer: Any) -> list[dict[str, Any]]:
        if self.fail:
            raise ValueError("set has no tokens to predict")
        self.scored.append(len(self.scored) + 1)
        return [
            {
                "name": "qa",
                "path": "/qa.jsonl",
                "kind": "set",
                "format": "instruction",
                "rows": 4,
                "loss": 1.0 / len(self.scored),
                "perplexity": 2.0,
                "exact_match": 0.5,
                "rouge_l": 0.6,
                "refusal_rate": None,
            }
        ]


def _runner(
    tmp_path: Path, sets: Sets, train: Callable[[], float | None]
) -> tuple[RoundRunner, StateStore]:
    store = StateStore.open(tmp_path)
    services = MemberServices(
        me="me",
        config=SimpleNamespace(  # type: ignore[arg-type]
            federation=SimpleNamespace(
                max_eval_loss_increase=None,
                rounds=0,
                group_size=4,
                round_deadline_s=1.0,
                final_averaging_rounds=0,
                mode="lora_avg",
                heartbeat_s=2.0,
            ),
            train=SimpleNamespace(samples_per_round=0, sample_max_new_tokens=8),
            state_dir=tmp_path,
        ),
        trainer=Trainer(),  # type: ignore[arg-type]
        store=store,
        events=EventBus(),
        mailbox=Mailbox(max_bytes_per_sender_per_round=1 << 20),
        link=None,  # type: ignore[arg-type]
        exchange=SimpleNamespace(train=train),  # type: ignore[arg-type]
        adapters=None,  # type: ignore[arg-type]
        view=dict,
        heartbeat_interval=lambda: 2.0,
        is_member=lambda peer: True,
        up_members=lambda: ["me"],  # alone: no group, the round keeps its local training
        planning_members=lambda: ["me"],
        set_phase=lambda phase: None,
        reject=lambda *args: None,
        stopping=asyncio.Event(),
        round_eval=sets,  # type: ignore[arg-type]
    )
    return RoundRunner(services), store


async def test_due_rounds_that_changed_the_model_are_scored_and_kept(tmp_path: Path) -> None:
    sets = Sets(RoundEvalSettings(sets=["/qa.jsonl"], every_rounds=2))
    runner, store = _runner(tmp_path, sets, lambda: 0.5)
    try:
        for r in (1, 2, 3, 4):
            await runner.run_round(r)
        evals = store.round_evals()
        parts = {r: store.round_record(r).apply_parts for r in (1, 2)}  # type: ignore[union-attr]
    finally:
        store.close()
    assert [(e["round"], e["name"], e["loss"]) for e in evals] == [(2, "qa", 1.0), (4, "qa", 0.5)]
    assert "eval_sets" in parts[2] and "eval_sets" not in parts[1]  # type: ignore[operator]


async def test_a_round_that_changed_nothing_is_not_scored_again(tmp_path: Path) -> None:
    sets = Sets(RoundEvalSettings(sets=["/qa.jsonl"]))
    runner, store = _runner(tmp_path, sets, lambda: None)  # e.g. the privacy budget is spent
    runner.privacy_spent = True  # local training is skipped, and no group forms
    try:
        await runner.run_round(1)
        evals = store.round_evals()
    finally:
        store.close()
    assert sets.scored == [] and evals == []


async def test_a_failed_evaluation_is_logged_and_the_round_completes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sets = Sets(RoundEvalSettings(sets=["/qa.jsonl"]))
    sets.fail = True
    runner, store = _runner(tmp_path, sets, lambda: 0.5)
    try:
        await runner.run_round(1)
        record = store.round_record(1)
        evals = store.round_evals()
    finally:
        store.close()
    assert record is not None and record.status == "local_only" and evals == []
    assert any(
        "[eval] sets not scored" in r.getMessage() and "no tokens" in r.getMessage()
        for r in caplog.records
    )


def test_a_database_from_before_round_eval_gains_the_table(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "fedswarm.sqlite")
    for version in (1, 2, 3):
        db.executescript(MIGRATIONS[version])
    db.execute("INSERT INTO rounds (round, status, started_at) VALUES (1, 'complete', 0)")
    db.execute("PRAGMA user_version=3")
    db.commit()
    db.close()
    store = StateStore.open(tmp_path)
    try:
        store.set_round_eval(
            1, [{"name": "a", "path": "/a", "kind": "set", "rows": 2, "loss": 3.0}]
        )
        store.set_round_eval(
            1, [{"name": "a", "path": "/a", "kind": "set", "rows": 2, "loss": 2.0}]
        )  # a round run again replaces its scores
        evals = store.round_evals()
        old = store.round_record(1)
    finally:
        store.close()
    assert old is not None and old.status == "complete"
    assert [(e["round"], e["loss"], e["exact_match"]) for e in evals] == [(1, 2.0, None)]


def test_the_view_serves_the_settings_and_the_scores(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    try:
        store.set_round_eval(
            3,
            [{"name": "refuse", "path": "/r", "kind": "refusal", "rows": 4, "refusal_rate": 0.25}],
        )

        def daemon(store: StateStore | None, settings: RoundEvalSettings) -> Any:
            return SimpleNamespace(
                store=store,
                config=SimpleNamespace(eval=settings, federation=SimpleNamespace(mode="lora_avg")),
            )

        panel = DaemonStatusView(
            daemon(store, RoundEvalSettings(refusal=["/r"], every_rounds=3, max_rows=4))
        ).evaluation()
        off = DaemonStatusView(daemon(None, RoundEvalSettings())).evaluation()
    finally:
        store.close()
    assert (panel["enabled"], panel["every_rounds"], panel["max_rows"]) == (True, 3, 4)
    assert [(e["round"], e["kind"], e["refusal_rate"]) for e in panel["results"]] == [
        (3, "refusal", 0.25)
    ]
    assert off == {"enabled": False, "every_rounds": None, "max_rows": None, "results": []}


def test_a_bad_eval_file_is_refused_at_config_check_with_file_and_line(
    node_config: Path, run_cli: RunCli, one_line_error: OneLineError
) -> None:
    qa = node_config.parent / "qa.jsonl"
    qa.write_text('{"instruction": "Say hi", "output": "hi"}\n{"instruction": "x"}\n')
    node_config.write_text(node_config.read_text() + '\n[eval]\nsets = ["qa.jsonl"]\n')
    one_line_error(
        run_cli("config", "check", "--config", str(node_config)), "[eval]", f"{qa}:2:", "'output'"
    )
    node_config.write_text(
        node_config.read_text().replace('sets = ["qa.jsonl"]', 'refusal = ["missing.jsonl"]')
    )
    one_line_error(
        run_cli("config", "check", "--config", str(node_config)),
        "[eval]",
        "missing.jsonl",
        "cannot read",
    )


def test_metrics_report_the_latest_scored_round(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    try:
        view = DaemonStatusView(
            SimpleNamespace(  # type: ignore[arg-type]
                store=store,
                config=SimpleNamespace(
                    eval=RoundEvalSettings(sets=["/qa"]),
                    federation=SimpleNamespace(mode="lora_avg"),
                ),
            )
        )
        before = view._eval_metrics()
        for r, loss in ((1, 2.0), (2, 1.5)):
            store.set_round_eval(
                r,
                [
                    {
                        "name": "qa",
                        "path": "/qa",
                        "kind": "set",
                        "rows": 3,
                        "loss": loss,
                        "exact_match": 0.5,
                    }
                ],
            )
        after = view._eval_metrics()
    finally:
        store.close()
    assert before == {"eval_round": 0, "eval_scores": []}
    assert after == {
        "eval_round": 2,
        "eval_scores": [("qa", "loss", 1.5), ("qa", "exact_match", 0.5)],
    }
