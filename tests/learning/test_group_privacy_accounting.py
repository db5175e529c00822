"""Group-level DP and the PRV option: ε is Opacus's, stepped directly, for the same history."""

from __future__ import annotations

import warnings

import pytest
from fedswarm.learning.errors import PrivacyConfigError
from fedswarm.learning.group_privacy import GroupBudget
from fedswarm.learning.privacy import Spend, epsilon_of, make_plan
from fedswarm.learning.settings import PrivacySettings, TrainSettings
from opacus.accountants import PRVAccountant, RDPAccountant


def _stepped(
    accountant: RDPAccountant | PRVAccountant, history: list[Spend], delta: float
) -> float:
    for s in history:
        for _ in range(s.steps):
            accountant.step(noise_multiplier=s.noise_multiplier, sample_rate=s.sample_rate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(accountant.get_epsilon(delta))


@pytest.mark.parametrize("name", ["rdp", "prv"])
def test_group_epsilon_is_opacus_with_sample_rate_one_per_round(name: str) -> None:
    budget = GroupBudget(delta=1e-5, accountant=name)
    for z in (4.0, 4.0, 4.0, 6.0, 6.0):
        budget.record(z)
    assert budget.rounds == 5 and len(budget.history) == 2  # merged stretches
    fresh = RDPAccountant() if name == "rdp" else PRVAccountant()
    expected = _stepped(fresh, [Spend(4.0, 1.0, 3), Spend(6.0, 1.0, 2)], 1e-5)
    assert budget.epsilon() == pytest.approx(expected, rel=1e-6)
    # more noise, less ε: the accounting can fail in the direction that matters
    quieter = GroupBudget(delta=1e-5, accountant=name)
    for _ in range(5):
        quieter.record(8.0)
    assert quieter.epsilon() < budget.epsilon()


def test_group_target_is_enforced_one_round_ahead() -> None:
    budget = GroupBudget(delta=1e-5, target_epsilon=2.0)
    rounds = 0
    while budget.fits(5.0):
        budget.record(5.0)
        rounds += 1
    assert 0 < rounds < 100
    assert budget.epsilon() <= 2.0
    assert epsilon_of([Spend(5.0, 1.0, rounds + 1)], 1e-5) > 2.0
    assert GroupBudget(delta=1e-5).fits(0.1)  # no target: accounted, never refused
    assert GroupBudget(delta=1e-5).remaining() is None


def test_record_level_prv_is_opacus_prv_stepped_directly() -> None:
    history = [Spend(1.1, 0.01, 300), Spend(0.8, 0.02, 50)]
    prv = epsilon_of(history, 1e-5, "prv")
    assert prv == pytest.approx(_stepped(PRVAccountant(), history, 1e-5), rel=1e-6)
    assert prv < epsilon_of(history, 1e-5, "rdp")  # PRV is the tighter of the two here
    with pytest.raises(PrivacyConfigError, match="accountant"):
        epsilon_of(history, 1e-5, "gdp")


def test_a_prv_plan_derives_its_noise_with_prv() -> None:
    train = TrainSettings(local_steps=10, batch_size=8, total_steps=20)
    plan = make_plan(
        PrivacySettings(enabled=True, target_epsilon=1.0, accountant="prv"), train, examples=400
    )
    assert plan.accountant == "prv"
    spent = epsilon_of([Spend(plan.noise_multiplier, plan.sample_rate, 20)], plan.delta, "prv")
    assert 0.95 <= spent <= 1.0
    rdp = make_plan(PrivacySettings(enabled=True, target_epsilon=1.0), train, examples=400)
    assert plan.noise_multiplier < rdp.noise_multiplier  # the tighter bound needs less noise
