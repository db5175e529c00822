"""``fedswarm ownership verify``: reads this member's mark off an export, never prints the key."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from fedswarm.daemon.config import load_config
from fedswarm.daemon.ownership import mark_plan
from fedswarm.learning.settings import LoraSettings, TrainSettings
from fedswarm.learning.trainer import LocalTrainer
from fedswarm.p2p.roster import Roster

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def marked_config(node_config: Path) -> Path:
    text = node_config.read_text().replace("[ownership]\nenabled = false",
                                           "[ownership]\nenabled = true\nbits = 32")
    node_config.write_text(text)
    return node_config


def test_an_export_of_a_marked_trainer_verifies_and_the_base_does_not(
        marked_config: Path, demo_model_dir: Path, tmp_path: Path, run_cli: Cli) -> None:
    config = load_config(marked_config)
    plan = mark_plan(config, Roster.load(config.roster_path))
    assert plan is not None
    trainer = LocalTrainer(config.model, LoraSettings(r=4, alpha=8), config.data,
                           TrainSettings(batch_size=4, lr=3e-3), ownership=plan)
    assert trainer.train(40).mark_detected == 1.0
    trainer.export_adapter(tmp_path / "export")

    marked = run_cli("ownership", "verify", "--config", str(marked_config),
                     "--adapter", str(tmp_path / "export"))
    assert marked.returncode == 0, marked.stderr
    assert f"key {plan.key.key_id}: 1.000 of 32 bits detected" in marked.stdout
    assert plan.key.secret.hex() not in marked.stdout + marked.stderr

    base = run_cli("ownership", "verify", "--config", str(marked_config),
                   "--model", str(demo_model_dir))
    assert base.returncode == 0, base.stderr
    assert ": 0.000 of 32 bits detected" in base.stdout


def test_with_triggers_verify_prints_their_accuracy_and_never_the_key_or_a_trigger(
        marked_config: Path, tmp_path: Path, run_cli: Cli) -> None:
    from fedswarm.learning.ownership.triggers import trigger_accuracy, triggers_for

    marked_config.write_text(marked_config.read_text().replace(
        "bits = 32", "bits = 32\ntriggers = 8\ntrigger_weight = 1.0", 1))
    config = load_config(marked_config)
    plan = mark_plan(config, Roster.load(config.roster_path))
    assert plan is not None
    trainer = LocalTrainer(config.model, LoraSettings(r=4, alpha=8), config.data,
                           TrainSettings(batch_size=4, lr=3e-3, total_steps=200),
                           ownership=plan)
    trainer.train(100)
    triggers = triggers_for(plan.key, 8, trainer.tokenizer)
    expected = trigger_accuracy(trainer.model, triggers)
    assert expected >= 0.75
    trainer.export_adapter(tmp_path / "export")

    out = run_cli("ownership", "verify", "--config", str(marked_config),
                  "--adapter", str(tmp_path / "export"))
    assert out.returncode == 0, out.stderr
    assert (f"key {plan.key.key_id}: {expected:.3f} of 8 secret triggers answered by"
            in out.stdout)
    assert "bits detected" in out.stdout
    text = out.stdout + out.stderr
    assert plan.key.secret.hex() not in text
    assert not any(" ".join(map(str, p[1:4])) in text for p in triggers.prompts)


def test_verify_needs_exactly_one_model(marked_config: Path, run_cli: Cli,
                                        one_line_error: Callable[..., str]) -> None:
    one_line_error(run_cli("ownership", "verify", "--config", str(marked_config)),
                   "exactly one of --model DIR or --adapter DIR")


def test_verify_refuses_a_key_others_can_read(marked_config: Path, run_cli: Cli,
                                              one_line_error: Callable[..., str],
                                              tmp_path: Path) -> None:
    (marked_config.parent / "ownership.key").chmod(0o644)
    one_line_error(run_cli("ownership", "verify", "--config", str(marked_config),
                           "--model", str(tmp_path)),
                   "[ownership] key_file", "mode 0644")
