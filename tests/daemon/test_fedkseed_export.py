"""``fedswarm export`` in mode fedkseed writes the tuned full model with a card that says so."""

from __future__ import annotations

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
