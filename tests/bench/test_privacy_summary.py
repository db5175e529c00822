"""bench.privacy's summary: gap_closed against the references, and the ε = 8 targets."""

from __future__ import annotations

import argparse

import pytest

from bench.privacy import ArmResult, ReferenceResult, _epsilons, summarise


def _arm(name: str, epsilon: float | None, union: float, auc: float) -> ArmResult:
    return ArmResult(arm=name, target_epsilon=epsilon,
                     epsilon_spent=None if epsilon is None else epsilon - 0.001,
                     delta=None, noise_multiplier=None, exposure_rank=[1.0, 3.0],
                     exposure_fit=[1.5, 1.5], membership_auc=auc, union_eval_loss=union,
                     train_s=1.0)


REFERENCES = [ReferenceResult("local-only", 0.9, [0.9], 1.0, None),
              ReferenceResult("centralised", 0.7, [0.7], 1.0, None)]
WITH_UNTRAINED = [ReferenceResult("untrained", 0.8, [0.8], 0.0, None), *REFERENCES]


def test_each_arm_gets_the_issue_keys_and_gap_closed_against_the_references() -> None:
    summary = summarise([_arm("no-dp", None, 0.72, 0.58), _arm("eps-8", 8.0, 0.79, 0.55),
                         _arm("eps-1", 1.0, 0.86, 0.52)], REFERENCES)
    assert summary["local_only_union_loss"] == 0.9
    assert summary["centralised_union_loss"] == 0.7
    rows = summary["arms"]
    assert list(rows) == ["no-dp", "eps-8", "eps-1"]
    assert rows["no-dp"]["gap_closed"] == pytest.approx(0.9)
    assert rows["eps-8"]["gap_closed"] == pytest.approx(0.55)
    assert rows["eps-1"]["gap_closed"] == pytest.approx(0.2)
    assert rows["eps-8"]["epsilon_spent"] == pytest.approx(7.999)
    assert rows["eps-8"]["canary_exposure"] == pytest.approx(2.0)  # mean rank exposure
    assert rows["eps-8"]["canary_exposure_max"] == pytest.approx(3.0)
    assert rows["eps-8"]["mia_auc"] == 0.55
    assert summary["targets"] == {"arm": "eps-8", "gap_closed>=0.5": True, "mia_auc<=0.6": True}


def test_the_targets_fail_when_eps8_closes_too_little_or_leaks_and_are_none_without_it() -> None:
    failing = summarise([_arm("eps-8", 8.0, 0.85, 0.61)], REFERENCES)
    assert failing["targets"] == {"arm": "eps-8", "gap_closed>=0.5": False,
                                  "mia_auc<=0.6": False}
    absent = summarise([_arm("no-dp", None, 0.72, 0.5), _arm("eps-3", 3.0, 0.8, 0.5)],
                       REFERENCES)
    assert absent["targets"] == {"arm": None, "gap_closed>=0.5": None, "mia_auc<=0.6": None}


def test_tied_references_leave_gap_closed_undefined_and_the_target_unmet() -> None:
    tied = [ReferenceResult("local-only", 0.8, [0.8], 1.0, None),
            ReferenceResult("centralised", 0.8, [0.8], 1.0, None)]
    summary = summarise([_arm("eps-8", 8.0, 0.75, 0.5)], tied)
    assert summary["arms"]["eps-8"]["gap_closed"] is None
    assert summary["targets"]["gap_closed>=0.5"] is False


def test_epsilons_take_the_issue_s_comma_form() -> None:
    assert _epsilons("1,3,8") == [1.0, 3.0, 8.0]
    assert _epsilons("8") == [8.0]
    with pytest.raises(argparse.ArgumentTypeError):
        _epsilons("1,x")
    with pytest.raises(argparse.ArgumentTypeError):
        _epsilons("0,3")


def test_gap_closed_from_untrained_measures_dp_against_the_untrained_model_and_no_dp() -> None:
    # local-only (0.9) is worse than untrained (0.8): an arm that learns nothing still
    # "closes" half the local → centralised gap, and 0 % of the untrained → no-DP one
    summary = summarise([_arm("no-dp", None, 0.72, 0.58), _arm("eps-8", 8.0, 0.76, 0.55),
                         _arm("eps-1", 1.0, 0.8, 0.52), _arm("eps-0.1", 0.1, 0.84, 0.5)],
                        WITH_UNTRAINED)
    assert summary["untrained_union_loss"] == 0.8
    assert summary["no_dp_union_loss"] == 0.72
    rows = summary["arms"]
    assert rows["no-dp"]["gap_closed_from_untrained"] == pytest.approx(1.0)
    assert rows["eps-8"]["gap_closed_from_untrained"] == pytest.approx(0.5)
    assert rows["eps-1"]["gap_closed"] == pytest.approx(0.5)
    assert rows["eps-1"]["gap_closed_from_untrained"] == pytest.approx(0.0)
    assert rows["eps-0.1"]["gap_closed_from_untrained"] == pytest.approx(-0.5)


def test_gap_closed_from_untrained_is_none_without_an_untrained_or_a_no_dp_arm() -> None:
    no_untrained = summarise([_arm("no-dp", None, 0.72, 0.5), _arm("eps-8", 8.0, 0.76, 0.5)],
                             REFERENCES)
    assert no_untrained["arms"]["eps-8"]["gap_closed_from_untrained"] is None
    no_baseline = summarise([_arm("eps-8", 8.0, 0.76, 0.5)], WITH_UNTRAINED)
    assert no_baseline["no_dp_union_loss"] is None
    assert no_baseline["arms"]["eps-8"]["gap_closed_from_untrained"] is None
