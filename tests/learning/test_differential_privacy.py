"""DP-SGD in the local trainer: the accountant, the budget, clipping and refusals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from fedswarm.learning.dp_sgd import PerExampleGradients, clipped_sum
from fedswarm.learning.errors import PrivacyBudgetSpentError, PrivacyConfigError
from fedswarm.learning.examples import Example, collate
from fedswarm.learning.privacy import PrivacyBudget, Spend, epsilon_of, make_plan
from fedswarm.learning.settings import (
    DataSettings,
    LoraSettings,
    PrivacySettings,
    TrainSettings,
)
from fedswarm.learning.trainer import LocalTrainer
from opacus.accountants import RDPAccountant


@pytest.fixture
def unpacked(demo_shard_dir: Path) -> DataSettings:
    shard = next(demo_shard_dir.glob("peer-0-*"))
    return DataSettings(str(shard / "train.jsonl"), str(shard / "eval.jsonl"), max_length=64,
                        packing=False)


def test_epsilon_is_the_opacus_rdp_accountants_for_the_same_parameters() -> None:
    history = [Spend(1.1, 0.01, 300), Spend(0.8, 0.02, 50)]
    accountant = RDPAccountant()
    for s in history:
        for _ in range(s.steps):
            accountant.step(noise_multiplier=s.noise_multiplier, sample_rate=s.sample_rate)
    assert epsilon_of(history, 1e-5) == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)
    assert epsilon_of([], 1e-5) == 0.0


def test_derived_noise_spends_the_target_over_total_steps() -> None:
    train = TrainSettings(local_steps=10, batch_size=8, total_steps=200)
    plan = make_plan(PrivacySettings(enabled=True, target_epsilon=3.0), train, examples=400)
    assert plan.delta == pytest.approx(1 / 400)
    spent = epsilon_of([Spend(plan.noise_multiplier, plan.sample_rate, 200)], plan.delta)
    assert 2.9 <= spent <= 3.0


def test_a_budget_that_cannot_cover_one_round_is_refused_with_one_line() -> None:
    train = TrainSettings(local_steps=50, batch_size=8)
    settings = PrivacySettings(enabled=True, target_epsilon=0.5, noise_multiplier=0.5)
    with pytest.raises(PrivacyConfigError, match="cannot cover one round") as caught:
        make_plan(settings, train, examples=400)
    assert "\n" not in str(caught.value)


def test_noise_needs_a_multiplier_or_total_steps() -> None:
    with pytest.raises(PrivacyConfigError, match="noise_multiplier"):
        make_plan(PrivacySettings(enabled=True), TrainSettings(), examples=400)


def test_affordable_steps_stop_exactly_at_the_target() -> None:
    train = TrainSettings(local_steps=5, batch_size=8)
    plan = make_plan(PrivacySettings(enabled=True, target_epsilon=1.0, noise_multiplier=1.0),
                     train, examples=400)
    budget = PrivacyBudget(plan)
    k = budget.affordable_steps(100_000)
    assert epsilon_of([Spend(1.0, plan.sample_rate, k)], plan.delta) <= 1.0
    assert epsilon_of([Spend(1.0, plan.sample_rate, k + 1)], plan.delta) > 1.0


def test_packed_text_is_refused_under_dp(make_trainer: Callable[..., LocalTrainer],
                                         demo_shard_dir: Path) -> None:
    shard = next(demo_shard_dir.glob("peer-0-*"))
    packed = DataSettings(str(shard / "train.jsonl"), str(shard / "eval.jsonl"), max_length=64)
    with pytest.raises(PrivacyConfigError, match="packing"):
        make_trainer(data=packed, privacy=PrivacySettings(enabled=True, noise_multiplier=1.0))


@pytest.mark.parametrize("peft_type", ["LORA", "LOHA"])
def test_per_example_gradients_are_each_examples_own(
        make_trainer: Callable[..., LocalTrainer], unpacked: DataSettings, peft_type: str) -> None:
    trainer = make_trainer(data=unpacked, lora=LoraSettings(r=4, alpha=8, peft_type=peft_type),
                           privacy=PrivacySettings(enabled=True, noise_multiplier=1.0))
    # three lengths, so the batch is padded
    examples = [Example(e.input_ids[:n], e.labels[:n])
                for e, n in zip(trainer.data.train[:3], (64, 40, 23), strict=True)]
    batch = collate(examples, int(trainer.tokenizer.pad_token_id))
    grads, losses = trainer._per_example(batch)
    params = [p for _, p in trainer._trainable]
    trainer.model.train()
    for i, example in enumerate(examples):
        alone = collate([example], int(trainer.tokenizer.pad_token_id))
        loss = trainer.model(**alone).loss  # HF's token mean over one example
        expected = torch.autograd.grad(loss, params)
        assert float(losses[i]) == pytest.approx(float(loss.detach()), rel=1e-4)
        for (name, _), g in zip(trainer._trainable, expected, strict=True):
            torch.testing.assert_close(grads[name][i], g, rtol=1e-3, atol=1e-6)


def test_each_example_contributes_at_most_the_clipping_norm(
        make_trainer: Callable[..., LocalTrainer], unpacked: DataSettings) -> None:
    trainer = make_trainer(data=unpacked, privacy=PrivacySettings(
        enabled=True, noise_multiplier=1.0, max_grad_norm=1e-4))
    per_example: PerExampleGradients = trainer._per_example
    for index in range(4):
        summed = clipped_sum(per_example, trainer.data.train, [index], 4,
                             int(trainer.tokenizer.pad_token_id), 1e-4, trainer.input_device)
        norm = torch.cat([g.flatten() for g in summed.grads.values()]).norm()
        assert float(norm) <= 1e-4 * (1 + 1e-4)
        assert float(norm) > 0.9e-4  # really clipped, not zero


def test_training_stops_at_the_budget_and_a_restart_does_not_spend_it_again(
        make_trainer: Callable[..., LocalTrainer], unpacked: DataSettings) -> None:
    settings = PrivacySettings(enabled=True, target_epsilon=1.0, noise_multiplier=0.7)
    spent: list[Spend] = []
    steps_before: list[int] = []
    trainer = make_trainer(data=unpacked, privacy=settings, local_steps=3)

    def record(spend: Spend) -> None:  # what the daemon persists, before the steps
        steps_before.append(trainer.step)
        spent.append(spend)

    trainer.on_privacy_spend = record
    assert trainer.privacy is not None
    affordable = trainer.privacy.affordable_steps(10_000)
    assert affordable >= 3
    reports = []
    with pytest.raises(PrivacyBudgetSpentError, match="privacy budget spent"):
        while True:
            reports.append(trainer.train(50))
    assert sum(r.steps for r in reports) == affordable == trainer.step
    assert steps_before[0] == 0
    assert reports[-1].epsilon is not None and reports[-1].epsilon <= 1.0

    restarted = make_trainer(data=unpacked, privacy=settings, local_steps=3)
    restarted.restore_privacy_spend(spent)
    assert restarted.privacy is not None
    assert restarted.privacy.epsilon() == pytest.approx(trainer.privacy.epsilon())
    with pytest.raises(PrivacyBudgetSpentError):
        restarted.train()


def test_private_training_lowers_the_loss_with_little_noise(
        make_trainer: Callable[..., LocalTrainer], unpacked: DataSettings) -> None:
    trainer = make_trainer(data=unpacked, lr=1e-2, batch_size=16, privacy=PrivacySettings(
        enabled=True, target_epsilon=50.0, noise_multiplier=0.3))
    before = trainer.evaluate().loss
    trainer.train(30)
    assert trainer.evaluate().loss < before


def test_rounds_with_the_same_noise_merge_into_one_stretch_of_equal_epsilon() -> None:
    plan = make_plan(PrivacySettings(enabled=True, target_epsilon=50.0, noise_multiplier=1.0),
                     TrainSettings(local_steps=3, batch_size=8), examples=400)
    budget = PrivacyBudget(plan)
    for _ in range(50):
        budget.record(Spend(1.0, plan.sample_rate, 3))
    budget.record(Spend(2.0, plan.sample_rate, 3))
    assert budget.history == [Spend(1.0, plan.sample_rate, 150), Spend(2.0, plan.sample_rate, 3)]
    separate = [Spend(1.0, plan.sample_rate, 3)] * 50 + [Spend(2.0, plan.sample_rate, 3)]
    assert budget.epsilon() == pytest.approx(epsilon_of(separate, plan.delta), rel=1e-9)


def test_opacus_loads_only_with_privacy_and_leaves_the_root_logger_alone() -> None:
    """Opacus costs about 1 s to import, and calls logging.basicConfig when imported: a
    daemon's log lines then came out twice."""
    import subprocess
    import sys

    script = ("import logging, sys, fedswarm.learning.trainer\n"
              "print('OPACUS', 'opacus' in sys.modules)\n"
              "import fedswarm.learning.privacy\n"
              "print('HANDLERS', len(logging.getLogger().handlers))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "OPACUS False" in result.stdout
    assert "HANDLERS 0" in result.stdout


def test_dp_sgd_trains_with_the_few_rounds_levers_and_leaves_frozen_a_alone(
        make_trainer: Callable[..., LocalTrainer], unpacked: DataSettings) -> None:
    """[federation] freeze_lora_a and scaffold change which weights train and what each
    step adds; under DP-SGD the per-example gradients must still cover exactly the
    trainable weights (B only when A is frozen), and the correction is post-processing."""
    trainer = make_trainer(data=unpacked, batch_size=8, freeze_lora_a=True, scaffold=True,
                           privacy=PrivacySettings(enabled=True, target_epsilon=50.0,
                                                   noise_multiplier=0.5))
    frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters()
              if ".lora_A." in n}
    before = trainer.adapter_vector()
    report = trainer.train(3)
    assert report.steps == 3 and report.epsilon is not None and report.epsilon > 0
    assert frozen and all(torch.equal(frozen[n], p) for n, p in trainer.model.named_parameters()
                          if n in frozen)
    after = trainer.adapter_vector()
    assert np.isfinite(after).all() and not np.array_equal(after, before)
    assert np.isfinite(trainer.control_vector()).all()
