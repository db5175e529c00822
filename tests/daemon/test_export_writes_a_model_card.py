"""``fedswarm export`` writes a model card that says how the adapter was made.

PEFT's own README.md is a blank template ("[More Information Needed]"); an exported
adapter travels to people who never saw the federation. The card must name the base
model, the federation and its members, the rounds, the data formats, how updates
were aggregated and whether differential privacy was applied, and the folder must
still load with stock ``PeftModel``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from fedswarm.daemon.cli import main
from fedswarm.daemon.config import load_config
from fedswarm.daemon.model_card import CardFacts, model_card
from fedswarm.daemon.state import StateStore
from fedswarm.learning.trainer import LocalTrainer

pytestmark = pytest.mark.timeout(180)


def test_exported_adapter_has_a_filled_model_card_and_loads_with_peft(
    node_config: Path, tmp_path: Path
) -> None:
    config = load_config(node_config)
    trainer = LocalTrainer(config.model, config.lora, config.data, config.train)
    trainer.save_checkpoint(config.state_dir / "checkpoint", 2)
    store = StateStore.open(config.state_dir)
    for round, status, loss in ((0, "initial", 5.0), (1, "complete", 4.5), (2, "local_only", 4.2)):
        store.begin_round(round)
        store.update_round(round, status=status, eval_loss_after=loss)
    store.close()
    del trainer

    out = tmp_path / "adapter"
    run = CliRunner().invoke(main, ["export", "--config", str(node_config), "--out", str(out)])
    assert run.exit_code == 0, run.output
    card = (out / "README.md").read_text()
    assert "More Information Needed" not in card
    assert f'base_model: "{config.model.path}"' in card
    assert "federation id: `fed`" in card and "bank-a" in card
    assert "rounds: 2 (1 averaged with a group; 1 complete, 1 local_only)" in card
    assert "bfv-mask-shamir-v3" in card and "Differential privacy" in card
    assert "eval loss 5.0000 before any training, 4.2000 after round 2" in card
    assert "`text` format" in card

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(config.model.path)
    assert isinstance(PeftModel.from_pretrained(base, str(out)), PeftModel)


def test_a_plaintext_federation_and_dp_are_stated_as_they_were() -> None:
    facts = CardFacts(
        org="a", federation_id="f", member_orgs=["a", "b", "c"], base_model="m",
        base_model_type="llama", peft_type="LORA", r=8, alpha=16, dropout=0.0,
        target_modules=["q_proj"], mode="lora_avg", group_size=4,
        secure_aggregation="none", round=3, rounds_complete=3,
        rounds_by_status={"complete": 3}, data_format="chat", train_rows=10,
        max_length=64, local_steps=5, lr=2e-4, eval_loss_start=None, eval_loss_last=None,
        adapter_fingerprint="fp", fedswarm_version="0.1.0",
        differential_privacy="DP-SGD, epsilon 3, delta 1e-5",
    )
    card = model_card(facts)
    assert "saw each other's adapter updates" in card
    assert "DP-SGD, epsilon 3" in card
    assert "secure-aggregation" not in card.split("---")[1]
