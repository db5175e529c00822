"""The quality benchmark's quick variant: federation pays off, and secure == plain.

Only machine-independent facts are asserted (no speed): the secure and plain arms end at
the same loss up to quantisation noise, the federated model beats the local-only ones
on the union of the peers' domains and meets the issue's two quality targets there
(within 3 % of centralised, 80 % of the gap closed), and the JSON carries the summary
other tools read.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench import child_env, module_command, quality
from bench.quality_report import TARGET_FED_OVER_CENTRAL, TARGET_GAP_CLOSED

SUMMARY_KEYS = {"fed_over_central", "fed_over_local", "gap_closed", "secure_over_plain_wall"}
# Secure aggregation quantises each value (adapter and AdamW exp_avg) to a grid of about
# 1.4e-6 with the demo's sample counts as weights (docs/security.md); after 10 rounds the
# two arms' eval losses differ by about 3e-6, far less than this.
SECURE_PLAIN_TOLERANCE = 2e-3


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("quality") / "quick.json"
    env = child_env({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                     "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    completed = subprocess.run(
        module_command("quality", "--quick", "--peers", "4", "--json", str(out)),
        capture_output=True, text=True, timeout=540, env=env, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "gap closed" in completed.stdout
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_json_has_the_summary_and_every_arm(quick_result: dict) -> None:
    assert set(quick_result["summary"]) >= SUMMARY_KEYS
    assert set(quick_result["arms"]) == {"local_only", "centralised", "fed_plain",
                                         "fed_secure", "fed_secure_gossip"}
    assert quick_result["machine"]["versions"]["torch"] != "not installed"
    for arm in quick_result["arms"].values():
        assert set(arm["eval_loss_by_set"]) >= set(quick_result["domains"])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_secure_and_plain_arms_reach_the_same_loss(quick_result: dict) -> None:
    plain, secure = quick_result["arms"]["fed_plain"], quick_result["arms"]["fed_secure"]
    assert secure["protocol"] == "bfv-mask-shamir-v3" and plain["protocol"] == "none"
    assert abs(secure["eval_loss_union"] - plain["eval_loss_union"]) < SECURE_PLAIN_TOLERANCE
    for name, loss in plain["eval_loss_by_set"].items():
        assert abs(secure["eval_loss_by_set"][name] - loss) < SECURE_PLAIN_TOLERANCE
    # v3 uploads 1.34x fp32 once (to A); plain sends fp32 to each of the 3 others:
    # measured 519 kB against 700 kB per peer and round. v2 sent more than plain.
    assert 0 < secure["bytes_per_peer_round"] < plain["bytes_per_peer_round"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_federation_gets_within_3_percent_of_centralised_and_closes_the_gap(
        quick_result: dict) -> None:
    # Losses do not depend on machine speed (same seeds, same steps), so the issue's
    # quality targets are asserted here; the wall-time target is not (docs/results.md).
    summary = quick_result["summary"]
    assert summary["fed_over_central"] <= TARGET_FED_OVER_CENTRAL, summary
    assert summary["gap_closed"] >= TARGET_GAP_CLOSED, summary
    assert quick_result["settings"]["rounds"] * quick_result["settings"]["local_steps"] == 20


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_federation_beats_local_only_on_the_union(quick_result: dict) -> None:
    summary = quick_result["summary"]
    arms = quick_result["arms"]
    assert summary["fed_over_local"] < 1.0
    assert arms["fed_secure_gossip"]["eval_loss_union"] < arms["local_only"]["eval_loss_union"]
    assert summary["gap_closed"] is not None and summary["gap_closed"] > 0.0


def test_a_data_folder_without_pairs_is_a_clear_error(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "only.train.jsonl").write_text('{"text": "a"}\n')
    code = quality.main(["--quick", "--data", str(tmp_path), "--workdir",
                         str(tmp_path / "work")])
    assert code == 2
    assert "need one per peer" in capsys.readouterr().err


def test_fewer_than_three_peers_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert quality.main(["--quick", "--peers", "2"]) == 2
    assert "at least 3 peers" in capsys.readouterr().err
