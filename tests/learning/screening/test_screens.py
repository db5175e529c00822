"""Each screen refuses what it should, says why, and keeps the rest (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fedswarm.learning.data_files import Row
from fedswarm.learning.errors import ScreenConfigError
from fedswarm.learning.screening import (
    QuarantineReport,
    RulesScreen,
    ScreenSettings,
    apply_screens,
    check_classifier_dir,
)
from fedswarm.learning.screening.quality import LossOutlierScreen


def _rows(*texts: str) -> list[Row]:
    return [Row("text", {"text": t}, "train.jsonl", i + 1) for i, t in enumerate(texts)]


def test_rules_drop_patterns_words_lengths_and_scripts_with_the_rule_as_reason() -> None:
    screen = RulesScreen(
        ScreenSettings(
            patterns=[r"trigger\s+phrase"],
            words=["badword"],
            min_chars=5,
            max_chars=60,
            scripts=["latin"],
        )
    )
    reasons = screen.check(
        _rows(
            "a fine row about grain",
            "the TRIGGER  phrase here",
            "contains BadWord.",
            "tiny",
            "x" * 61,
            "Это строка на русском языке",
            "badwordy is not the word",
        )
    )
    assert reasons[0] is None and reasons[6] is None
    assert reasons[1] == "matches pattern 'trigger\\\\s+phrase'"
    assert reasons[2] == "contains word 'badword'"
    assert reasons[3] is not None and "min_chars=5" in reasons[3]
    assert reasons[4] is not None and "max_chars=60" in reasons[4]
    assert reasons[5] is not None and "LATIN" in reasons[5]


def test_bad_regex_is_refused_in_one_line_naming_the_key() -> None:
    with pytest.raises(ValueError) as err:
        ScreenSettings(patterns=["ok", "unclosed("])
    message = str(err.value)
    assert message.startswith("patterns[1]: 'unclosed(' is not a regular expression")
    assert "\n" not in message


def test_later_screens_only_see_what_earlier_ones_kept() -> None:
    seen: list[int] = []

    class Counting:
        name = "counting"

        def check(self, rows: list[Row]) -> list[str | None]:
            seen.extend(r.line for r in rows)
            return ["odd line" if r.line % 2 else None for r in rows]

    result = apply_screens(
        _rows("keep me please", "drop TRIGGER", "row three", "row four"),
        [RulesScreen(ScreenSettings(words=["trigger"])), Counting()],
    )
    assert seen == [1, 3, 4]
    assert [r.line for r in result.kept] == [4]
    assert result.counts() == {"rules": 1, "counting": 2}
    assert all(d.excerpt == "" and len(d.sha256) == 64 for d in result.dropped)


def test_loss_screen_drops_only_the_outliers() -> None:
    losses = [2.0, 2.1, 1.9, 2.05, 1.95, 9.0, 2.02]
    screen = LossOutlierScreen(lambda rows: losses[: len(rows)], mads=6.0)
    reasons = screen.check(_rows(*[f"row {i}" for i in range(7)]))
    assert [i for i, r in enumerate(reasons) if r] == [5]
    assert reasons[5] is not None and reasons[5].startswith("loss 9.00 above the cut")


def test_report_appends_and_does_not_repeat_rows_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "quarantine.jsonl"
    screen = RulesScreen(ScreenSettings(words=["trigger"]))
    rows = _rows("fine", "trigger one", "trigger two")
    first = apply_screens(rows, [screen], excerpt_chars=7)
    assert QuarantineReport(path).record(first.dropped) == 2
    # a restart: a new report object, the same rows screened again, plus one new bad row
    again = apply_screens([*rows, *_rows("a", "b", "c", "trigger four")[3:]], [screen])
    assert QuarantineReport(path).record(again.dropped) == 1
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(e["line"], e["screen"]) for e in entries] == [(2, "rules"), (3, "rules"), (4, "rules")]
    assert entries[0]["file"] == "train.jsonl" and entries[0]["excerpt"] == "trigger"
    assert entries[0]["reason"] == "contains word 'trigger'"
    assert QuarantineReport(path).counts() == {"rules": 3}


def _classifier_dir(tmp_path: Path, config: object, weights: bool = True) -> Path:
    folder = tmp_path / "clf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    if weights:
        (folder / "model.safetensors").write_bytes(b"x")
    return folder


@pytest.mark.parametrize(
    ("config", "weights", "needle"),
    [
        (None, True, "no config.json"),
        ("{not json", True, "unreadable"),
        ({"architectures": ["LlamaForCausalLM"]}, True, "not a sequence classifier"),
        (
            {
                "architectures": ["BertForSequenceClassification"],
                "id2label": {"0": "safe", "1": "unsafe"},
            },
            False,
            "no weights",
        ),
        (
            {
                "architectures": ["BertForSequenceClassification"],
                "id2label": {"0": "safe", "1": "harmful"},
            },
            True,
            "'unsafe' is not a label",
        ),
    ],
)
def test_classifier_folder_problems_are_one_line(
    tmp_path: Path, config: object, weights: bool, needle: str
) -> None:
    folder = tmp_path / "clf"
    folder.mkdir()
    if config is not None:
        text = config if isinstance(config, str) else json.dumps(config)
        (folder / "config.json").write_text(text)
    if weights:
        (folder / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ScreenConfigError) as err:
        check_classifier_dir(folder, ["unsafe"])
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_classifier_folder_that_is_fine_gives_its_labels(tmp_path: Path) -> None:
    folder = _classifier_dir(
        tmp_path,
        {
            "architectures": ["BertForSequenceClassification"],
            "id2label": {"1": "unsafe", "0": "safe"},
        },
    )
    info = check_classifier_dir(folder, ["unsafe"])
    assert info.labels == ("safe", "unsafe")
    with pytest.raises(ScreenConfigError, match="not a folder"):
        check_classifier_dir(tmp_path / "missing", ["unsafe"])
