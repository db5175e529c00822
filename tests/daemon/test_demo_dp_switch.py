"""`fedswarm demo --dp`: settings that fit the demo shard, and ε reported at the end."""

from __future__ import annotations

from pathlib import Path

import pytest
from fedswarm.daemon.demo.command import DEMO_DP, DEMO_DP_BATCH, privacy_lines, run_demo
from fedswarm.daemon.errors import DemoError
from fedswarm.learning.privacy import make_plan
from fedswarm.learning.settings import PrivacySettings, TrainSettings

DEMO_ROWS, DEMO_STEPS, DEMO_ROUNDS = 400, 15, 3


def test_the_demo_dp_settings_fit_the_demo_shard_with_budget_to_spare() -> None:
    plan = make_plan(
        PrivacySettings(**DEMO_DP),
        TrainSettings(local_steps=DEMO_STEPS, batch_size=DEMO_DP_BATCH),
        examples=DEMO_ROWS,
    )
    from fedswarm.learning.privacy import PrivacyBudget

    budget = PrivacyBudget(plan)
    for _ in range(DEMO_ROUNDS):
        assert budget.affordable_steps(DEMO_STEPS) == DEMO_STEPS
        budget.spend(DEMO_STEPS)
    # docs/privacy.md: 1.88 for 45 steps of an expected 32 rows at σ = 1.2
    assert 1.7 < budget.epsilon() < 2.1
    assert plan.delta == pytest.approx(1 / DEMO_ROWS)


def test_the_end_of_the_demo_says_what_each_peer_spent() -> None:
    summary = {
        "per_peer": [
            {
                "org": "finance",
                "privacy": {
                    "epsilon_spent": 0.7012,
                    "epsilon_target": 3.0,
                    "delta": 0.0025,
                    "steps": 45,
                    "noise_multiplier": 1.0,
                },
            },
            {"org": "medicine", "privacy": None},
        ]
    }
    lines = privacy_lines(summary)
    assert lines[0].startswith("differential privacy:")
    assert "finance" in lines[1] and "ε 0.701 spent of 3" in lines[1] and "45 steps" in lines[1]
    assert len(lines) == 2
    assert privacy_lines({"per_peer": [{"org": "x", "privacy": None}]}) == []


def test_dp_outside_lora_avg_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(DemoError, match="--dp"):
        run_demo(
            peers=3,
            rounds=1,
            secure=True,
            mode="fedkseed",
            group_size=4,
            workdir=tmp_path,
            json_path=None,
            dp=True,
        )
    assert not any(tmp_path.iterdir())


def test_with_dp_the_demo_passes_on_the_budget_and_a_falling_loss() -> None:
    from fedswarm.daemon.demo.command import result_line

    peer = {
        "org": "finance",
        "eval_loss_start": 0.81,
        "eval_loss_end": 0.78,
        "last_finished_round": 3,
        "privacy": {"epsilon_spent": 1.88, "epsilon_target": 3.0},
    }
    assert result_line({"ok": True, "dp": True, "per_peer": [peer], "rounds": 3}) == (
        "OK: every peer finished within its DP budget and its eval loss fell"
    )
    failed = result_line(
        {"ok": False, "dp": True, "rounds": 3, "per_peer": [{**peer, "privacy": None}]}
    )
    assert failed == "FAILED: finance reported no privacy budget"
    rose = {**peer, "eval_loss_end": 0.83}
    assert result_line({"ok": False, "dp": True, "rounds": 3, "per_peer": [rose]}) == (
        "FAILED: finance's eval loss did not fall"
    )
    over = {**peer, "privacy": {"epsilon_spent": 3.2, "epsilon_target": 3.0}}
    assert result_line({"ok": False, "dp": True, "rounds": 3, "per_peer": [over]}) == (
        "FAILED: finance spent more than its DP budget"
    )
    plain = result_line({"ok": False, "rounds": 3, "per_peer": [rose]})
    assert plain == "FAILED: finance's eval loss did not fall"
