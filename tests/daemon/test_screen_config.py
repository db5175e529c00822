"""``[data.screen]`` problems stop ``fedswarm config check`` in one line, before any model loads;
the daemon's quarantine report keeps its rows across restarts without repeating them."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from fedswarm.daemon.config import load_config
from fedswarm.daemon.screening import record_screening
from fedswarm.learning.data_files import Row
from fedswarm.learning.screening import RulesScreen, ScreenSettings, apply_screens

RunCli = Callable[..., subprocess.CompletedProcess[str]]
OneLineError = Callable[..., str]


def _with_screen(config: Path, table: str) -> None:
    config.write_text(config.read_text() + "\n[data.screen]\n" + table + "\n")


def test_bad_regex_is_one_line_at_config_check(
    node_config: Path, run_cli: RunCli, one_line_error: OneLineError
) -> None:
    _with_screen(node_config, 'patterns = ["fine", "bad[regex"]')
    one_line_error(
        run_cli("config", "check", "--config", str(node_config)),
        "[data.screen]",
        "patterns[1]",
        "'bad[regex'",
        "not a regular expression",
    )


def test_unreadable_classifier_folder_is_one_line_at_config_check(
    node_config: Path, run_cli: RunCli, one_line_error: OneLineError
) -> None:
    folder = node_config.parent / "safety-classifier"
    folder.mkdir()
    (folder / "config.json").write_text("{truncated")
    _with_screen(node_config, 'classifier = "safety-classifier"\ndrop_labels = ["unsafe"]')
    one_line_error(
        run_cli("config", "check", "--config", str(node_config)),
        "[data.screen] classifier",
        "config.json",
        "unreadable",
    )


def test_missing_classifier_folder_and_drop_labels_without_classifier(
    node_config: Path, run_cli: RunCli, one_line_error: OneLineError
) -> None:
    original = node_config.read_text()
    _with_screen(node_config, 'classifier = "nowhere"\ndrop_labels = ["unsafe"]')
    one_line_error(
        run_cli("config", "check", "--config", str(node_config)),
        "[data.screen] classifier",
        "nowhere",
        "not a folder",
    )
    node_config.write_text(original)
    _with_screen(node_config, 'drop_labels = ["unsafe"]')
    one_line_error(
        run_cli("config", "check", "--config", str(node_config)),
        "[data.screen]",
        "drop_labels",
        "needs classifier",
    )


def test_screen_table_is_read_and_classifier_resolved_against_the_config(node_config: Path) -> None:
    _with_screen(node_config, 'words = ["trigger"]\nclassifier = "clf"\ndrop_labels = ["x"]')
    config = load_config(node_config)
    assert config.screen.words == ["trigger"] and config.screen.enabled
    assert config.screen.classifier == str(node_config.parent / "clf")
    assert config.data.train_path.endswith("train.jsonl")


def test_quarantine_report_survives_restarts_without_repeating_rows(tmp_path: Path) -> None:
    rows = [
        Row("text", {"text": t}, "/data/train.jsonl", i + 1)
        for i, t in enumerate(["fine", "has trigger", "also fine", "trigger again"])
    ]
    screen = RulesScreen(ScreenSettings(words=["trigger"]))
    first = record_screening(tmp_path, apply_screens(rows, [screen]))
    second = record_screening(tmp_path, apply_screens(rows, [screen]))  # the same files again
    assert (first.newly_reported, second.newly_reported) == (2, 0)
    assert second.report_entries == 2 and second.rows_dropped == 2
    assert second.as_dict()["dropped_by_screen"] == {"rules": 2}
    lines = (tmp_path / "quarantine.jsonl").read_text().splitlines()
    assert [json.loads(line)["line"] for line in lines] == [2, 4]
    off = record_screening(tmp_path, None)  # screen turned off later: history still counted
    assert not off.enabled and off.report_entries == 2


def test_metrics_show_rows_checked_and_dropped_by_screen() -> None:
    from fedswarm.daemon.views.prometheus import MetricsSnapshot, render_metrics
    from prometheus_client.parser import text_string_to_metric_families

    text = render_metrics(
        MetricsSnapshot(
            state="idle",
            up_since=1.0,
            screen_rows_checked=50,
            screen_rows_dropped={"rules": 3, "classifier": 2},
        )
    )
    samples = {
        (s.name, s.labels.get("screen", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("fedswarm_screen_rows_checked", "")] == 50
    assert samples[("fedswarm_screen_rows_dropped", "rules")] == 3
    assert samples[("fedswarm_screen_rows_dropped", "classifier")] == 2
    plain = render_metrics(MetricsSnapshot(state="idle", up_since=1.0))
    assert "fedswarm_screen_rows" not in plain  # screen off: no family at all


def test_a_mode_that_loads_data_without_the_screen_refuses_it(
    node_config: Path, run_cli: RunCli, one_line_error: OneLineError
) -> None:
    text = node_config.read_text().replace('mode = "lora_avg"', 'mode = "fedkseed"')
    node_config.write_text(text)
    _with_screen(node_config, 'patterns = ["never"]')
    one_line_error(
        run_cli("config", "check", "--config", str(node_config)),
        "[data.screen]",
        "'fedkseed'",
        "without the screen",
    )
