"""The privacy audit's measures behave as their definitions say (no model needed)."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bench import child_env, module_command
from bench.privacy_audit import (
    candidate_secrets,
    exposure_by_fit,
    exposure_by_rank,
    make_canaries,
    membership_auc,
)


def test_a_secret_below_every_candidate_has_full_rank_exposure() -> None:
    candidates = np.linspace(10.0, 20.0, 1000)
    assert exposure_by_rank(1.0, candidates, 10**6) == pytest.approx(math.log2(10**6))
    assert exposure_by_fit(1.0, candidates) > 10


def test_a_typical_secret_has_about_one_bit_of_exposure() -> None:
    candidates = np.random.default_rng(0).normal(15.0, 1.0, 5000)
    assert exposure_by_rank(15.0, candidates, 10**6) == pytest.approx(1.0, abs=0.1)
    assert exposure_by_fit(15.0, candidates) == pytest.approx(1.0, abs=0.05)


def test_membership_auc_is_one_when_members_have_lower_loss_and_half_when_equal() -> None:
    assert membership_auc(np.array([0.1, 0.2]), np.array([0.5, 0.9])) == 1.0
    assert membership_auc(np.array([0.9, 0.5]), np.array([0.1, 0.2])) == 0.0
    assert membership_auc(np.array([0.3, 0.3]), np.array([0.3, 0.3])) == 0.5


def test_canaries_are_reproducible_and_candidates_never_include_the_secret() -> None:
    first, second = make_canaries(4, seed=7), make_canaries(4, seed=7)
    assert first == second
    assert len({c.secret for c in first}) == 4
    for canary in first:
        guesses = candidate_secrets(canary, 500, seed=1)
        assert canary.secret not in guesses and len(guesses) == 500
        assert canary.text().startswith(f"The secret code of {canary.name} is ")


SUMMARY_KEYS = {"epsilon_spent", "union_loss", "gap_closed", "canary_exposure", "mia_auc"}


# about 100 s on 2 shared cores at batch 16 (the audit's batch 128 took 280 s, and this
# checks the plumbing, not the privacy): 4 + 3 trainers per arm, on CPU
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_quick_audit_runs_and_reports_every_arm(tmp_path: Path) -> None:
    out = tmp_path / "privacy.json"
    env = child_env({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                     "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"})
    completed = subprocess.run(
        module_command("privacy", "--quick", "--epsilons", "3,8", "--batch-size", "16",
                       "--json", str(out)),
        capture_output=True, text=True, timeout=840, env=env, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "MIA AUC" in completed.stdout and "gap closed" in completed.stdout
    result = json.loads(out.read_text())
    assert {"platform", "versions", "opacus"} <= set(result["machine"])
    arms = {arm["arm"]: arm for arm in result["arms"]}
    assert set(arms) == {"no-dp", "eps-3", "eps-8"}
    assert arms["no-dp"]["epsilon_spent"] is None
    assert 0 < arms["eps-3"]["epsilon_spent"] <= 3.0
    for arm in arms.values():
        assert 0.0 <= arm["membership_auc"] <= 1.0
        assert len(arm["exposure_rank"]) == 4

    assert [r["arm"] for r in result["references"]] == ["untrained", "local-only",
                                                          "centralised"]
    summary = result["summary"]
    assert math.isfinite(summary["untrained_union_loss"])
    local, central = summary["local_only_union_loss"], summary["centralised_union_loss"]
    assert math.isfinite(local) and math.isfinite(central) and local != central
    assert set(summary["arms"]) == set(arms)
    for name, row in summary["arms"].items():
        assert set(row) >= SUMMARY_KEYS, name
        assert math.isfinite(row["gap_closed"]) and math.isfinite(row["union_loss"])
        assert 0.0 <= row["mia_auc"] <= 1.0
        assert 0.0 <= row["canary_exposure"] <= math.log2(10**6)
        if row["target_epsilon"] is not None:
            assert 0 < row["epsilon_spent"] <= row["target_epsilon"] + 1e-9
    assert summary["targets"]["arm"] == "eps-8"
    assert isinstance(summary["targets"]["gap_closed>=0.5"], bool)
    assert isinstance(summary["targets"]["mia_auc<=0.6"], bool)
