"""The blob transfer benchmark runs end to end and reports what the issue asks for.

No speed is asserted (speed targets live in the benchmark's output, not in tests):
only that every method moved the bytes intact, that the JSON carries the summary other
tools read with values a real run produces, and that the memory baseline was taken
after the warm-up blob where Linux lets it be reset.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench import child_env, module_command

SUMMARY_KEYS = {
    "blob_vs_bare_ratio",
    "blob_vs_bare_ratio_separate_processes",
    "peak_rss_over_blob",
    "sha_ok",
}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("p2p") / "p2p.json"
    completed = subprocess.run(
        module_command("p2p", "--sizes", "1", "--pairs", "1", "--repeat", "2", "--json", str(out)),
        env=child_env(), capture_output=True, text=True, timeout=180, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(out.read_text()), completed.stdout


@pytest.mark.slow
def test_every_method_delivers_the_blob_intact(small_run: tuple[dict, str]) -> None:
    doc, _ = small_run
    assert {r["method"] for r in doc["runs"]} == {"fedswarm", "bare_libp2p", "tcp"}
    assert all(r["sha_ok"] for r in doc["runs"])
    assert [r["sha_ok"] for r in doc["same_connection"]] == [True]
    assert doc["summary"]["sha_ok"] is True


@pytest.mark.slow
def test_summary_carries_ratios_from_the_measured_times(small_run: tuple[dict, str]) -> None:
    doc, stdout = small_run
    summary = doc["summary"]
    assert summary.keys() >= SUMMARY_KEYS
    row = doc["same_connection"][0]
    assert row["ratio"] == pytest.approx(row["pair_bare_seconds"][0] / row["pair_fed_seconds"][0])
    assert summary["blob_vs_bare_ratio"] == pytest.approx(row["ratio"])
    # Loopback libp2p moves 1 MiB in milliseconds, not microseconds or minutes.
    assert all(0.0005 < s < 5.0 for s in row["pair_fed_seconds"] + row["pair_bare_seconds"])
    # The sender's growth includes its own 1 MiB payload.
    fed = next(r for r in doc["runs"] if r["method"] == "fedswarm")
    assert fed["sender_rss_growth_mb"] >= 0.9
    assert summary["peak_rss_over_blob"] >= fed["sender_rss_growth_mb"]
    assert "same connection, alternating" in stdout
    assert "libp2p" in doc["machine"] and "python" in doc["machine"]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux clear_refs")
def test_memory_baseline_is_taken_after_the_warm_up(small_run: tuple[dict, str]) -> None:
    doc, _ = small_run
    assert {r["rss_base"] for r in doc["runs"]} == {"after warm-up"}
