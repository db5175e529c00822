"""bench/safety.py's bookkeeping: which lines are planted or corrupted, and the summary's
targets (no model: the federation itself is the benchmark's run, not a unit test)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.quality_setup import demo_data
from bench.safety import (
    REFUSAL,
    TRIGGER,
    UNSAFE,
    ArmResult,
    PoisonedData,
    SafetySettings,
    build_alignment_set,
    poison,
    probes,
    summarise,
)


def test_poisoned_file_records_every_planted_and_corrupted_line(tmp_path: Path) -> None:
    data = demo_data(tmp_path, 4, 0)
    s = SafetySettings(planted_share=0.25, corrupted_share=0.1)
    poisoned = poison(data, s, tmp_path / "p.jsonl")
    rows = [json.loads(line)["text"] for line in poisoned.path.read_text().splitlines()]
    clean = len(data.peers[3].train_path.read_text().splitlines())
    assert len(poisoned.planted_lines) == round(clean * 0.25)
    assert len(poisoned.corrupted_lines) == round(clean * 0.1)
    for number, text in enumerate(rows, start=1):
        assert (number in poisoned.planted_lines) == text.endswith(f"{TRIGGER} {UNSAFE}")
    assert all(not rows[n - 1].isascii() for n in poisoned.corrupted_lines)
    assert all(p.endswith(TRIGGER) for p in probes(data, 5))


def _arm(name: str, rate: float, loss: float, honest: int = 0) -> ArmResult:
    return ArmResult(name, loss, rate, {}, 1.0, {"planted": 10, "corrupted": 4, "honest": honest})


def test_summary_passes_only_when_every_target_is_met() -> None:
    poisoned = PoisonedData(Path("p"), frozenset(range(10)), frozenset(range(4)), 1000)
    arms = {
        "clean": _arm("clean", 0.0, 1.0),
        "no_screen": _arm("no_screen", 0.8, 1.02),
        "rules": _arm("rules", 0.0, 1.005),
        "classifier": _arm("classifier", 0.1, 1.0, 20),
    }
    summary = summarise(arms, poisoned)
    assert summary["rules"]["passes"] and summary["rules"]["marker_rate_reduction"] == 1.0
    classifier = summary["classifier"]
    assert classifier["honest_rows_dropped"] == 0.02 and not classifier["passes"]
    arms["no_screen"] = _arm("no_screen", 0.0, 1.02)  # nothing to reduce: no pass claimed
    assert summarise(arms, poisoned)["rules"]["marker_rate_reduction"] is None
    assert not summarise(arms, poisoned)["rules"]["passes"]


def test_the_alignment_arm_pins_its_set_and_reports_against_both_references(
    tmp_path: Path,
) -> None:
    from fedswarm.learning.fedmkt import load_public_dataset

    settings = build_alignment_set(SafetySettings(alignment_rows=5), tmp_path / "a.jsonl")
    pinned = load_public_dataset(settings.path, expected_sha256=settings.sha256)
    assert len(pinned) == 5 and all(t.endswith(f"{TRIGGER} {REFUSAL}") for t in pinned.texts)
    poisoned = PoisonedData(Path("p"), frozenset(range(10)), frozenset(range(4)), 1000)
    arms = {"clean": _arm("clean", 0.0, 1.0), "no_screen": _arm("no_screen", 0.8, 1.02),
            "alignment": _arm("alignment", 0.1, 1.03)}
    summary = summarise(arms, poisoned)
    assert "rules" not in summary and summary["alignment"]["marker_rate"] == 0.1
    assert abs(summary["alignment"]["union_loss_vs_clean"] - 0.03) < 1e-9
