"""``fedswarm export`` in mode fedkseed writes the tuned full model with a card that says so;
``fedswarm run`` refuses a base model that is not pinned."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from fedswarm.daemon.cli import main
from fedswarm.daemon.config import load_config
from fedswarm.daemon.demo.local_federation import demo_base_model_sha256
from fedswarm.learning.fedkseed import KSeedTrainer
from fedswarm.learning.fedkseed.parameters import parameters_fingerprint
from transformers import AutoModelForCausalLM

pytestmark = pytest.mark.timeout(180)

RunCli = Callable[..., subprocess.CompletedProcess[str]]  # the conftest fixtures' types
OneLineError = Callable[..., str]


def test_export_writes_a_loadable_full_model_and_its_card(
    node_config: Path, demo_model_dir: Path, tmp_path: Path
) -> None:
    base = demo_base_model_sha256(demo_model_dir)
    text = node_config.read_text().replace('mode = "lora_avg"', 'mode = "fedkseed"')
    node_config.write_text(
        text + f'\n[fedkseed]\nk = 16\nlr = 2e-4\nbase_model_sha256 = "{base}"\n'
    )
    config = load_config(node_config)
    trainer = KSeedTrainer(config.model, config.data, config.train, config.fedkseed, "fed")
    trainer.train(2)
    trainer.save_checkpoint(config.state_dir / "checkpoint", 1)
    expected = trainer.parameters_fingerprint()
    del trainer

    out = tmp_path / "model"
    run = CliRunner().invoke(main, ["export", "--config", str(node_config), "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert "full model of round 1" in run.output
    loaded = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    assert parameters_fingerprint(loaded) == expected
    card = (out / "README.md").read_text()
    assert "FedKSeed-tuned model of bank-a (fed)" in card and "PeftModel" not in card
    assert f"base model sha256: {base}" in card and f"parameters fingerprint: {expected}" in card
    assert "federation id: `fed`" in card


def test_run_refuses_an_unpinned_base_model_and_names_its_hash(
    node_config: Path, demo_model_dir: Path, run_cli: RunCli, one_line_error: OneLineError
) -> None:
    """Exit 2, one line, before any peer is contacted: the hash to pin is in the message."""
    text = node_config.read_text().replace('mode = "lora_avg"', 'mode = "fedkseed"')
    node_config.write_text(text + "\n[fedkseed]\nk = 16\n")
    base = demo_base_model_sha256(demo_model_dir)
    one_line_error(
        run_cli("run", "--config", str(node_config)),
        "[fedkseed] base_model_sha256 is not set",
        f"hashes to {base}",
    )
