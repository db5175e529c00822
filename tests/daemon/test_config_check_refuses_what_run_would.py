"""``fedswarm config check`` answers fast (no torch) and refuses what ``run`` would refuse."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from fedswarm.daemon.cli import main

RunCli = Callable[..., subprocess.CompletedProcess[str]]  # the conftest fixtures' types
OneLineError = Callable[..., str]

HEAVY = ("torch", "transformers", "peft", "libp2p", "tenseal")


def test_config_check_imports_no_torch_transformers_or_libp2p(node_config: Path) -> None:
    """Importing torch and transformers cost 10-15 s per command on a 2-core box."""
    script = (
        "import sys\n"
        "from fedswarm.daemon.cli import main\n"
        "try:\n"
        f"    main(['config', 'check', '--config', {str(node_config)!r}])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code in (0, None), exit.code\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert ": ok (" in result.stdout
    assert "HEAVY []" in result.stdout, result.stdout


def test_train_file_without_a_valid_row_is_refused_with_each_rows_reason(
    node_config: Path, run_cli: RunCli, one_line_error: OneLineError
) -> None:
    train = node_config.parent.parent / "train.jsonl"
    train.write_text('{"text": ""}\n{"prompt": "x"}\n{oops\n')
    line = one_line_error(run_cli("config", "check", "--config", str(node_config)),
                          "[data] train_path", str(train), "3 bad rows")
    assert "line 1: 'text' must be a non-empty string" in line
    assert "line 3: invalid JSON" in line


def test_org_that_differs_from_the_roster_is_refused_by_check_and_run(
    node_config: Path, run_cli: RunCli, one_line_error: OneLineError
) -> None:
    node_config.write_text(node_config.read_text().replace('org = "bank-a"', 'org = "bnak-a"'))
    for command in (["config", "check"], ["run"]):
        one_line_error(run_cli(*command, "--config", str(node_config)),
                       "[node] org", "'bnak-a'", "'bank-a'")


def test_config_comes_from_the_environment_when_not_given(
    node_config: Path, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDSWARM_CONFIG", str(node_config))
    result = run_cli("config", "check")
    assert result.returncode == 0, result.stderr
    assert f"{node_config}: ok" in result.stdout


def test_missing_default_config_says_how_to_name_one(
    tmp_path: Path, run_cli: RunCli, one_line_error: OneLineError,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FEDSWARM_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    one_line_error(run_cli("status"), "config.toml", "--config", "FEDSWARM_CONFIG")


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in sorted(group.commands.items()):
        found.append((f"{prefix}{name}", command))
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix}{name} ")
    return found


@pytest.mark.parametrize("name,command", _commands(main), ids=lambda v: str(v))
def test_every_option_is_described_and_h_shows_help(
    name: str, command: click.Command, run_cli: RunCli
) -> None:
    undescribed = [p.name for p in command.params
                   if isinstance(p, click.Option) and not p.help and not p.hidden]
    assert undescribed == [], f"fedswarm {name}: options without help: {undescribed}"
    result = run_cli(*name.split(), "-h")
    assert result.returncode == 0, result.stderr
    assert "Usage: fedswarm" in result.stdout
    cut = [line for line in _command_list(result.stdout) if line.endswith("...")]
    assert cut == [], f"fedswarm {name} -h: summaries cut off: {cut}"


def _command_list(help_text: str) -> list[str]:
    """The lines of the "Commands:" section of a group's help."""
    lines = help_text.splitlines()
    if "Commands:" not in lines:
        return []
    section = lines[lines.index("Commands:") + 1:]
    return [line.rstrip() for line in section[: section.index("")] if line.strip()] if (
        "" in section) else [line.rstrip() for line in section]


def test_top_level_help_lists_every_command_uncut(run_cli: RunCli) -> None:
    result = run_cli("-h")
    assert result.returncode == 0, result.stderr
    assert "Examples:" in result.stdout
    listed = _command_list(result.stdout)
    assert len(listed) == len(main.commands)
    assert [line for line in listed if line.endswith("...")] == []


def test_model_folder_without_config_json_is_refused_by_check(
    tmp_path: Path, node_config: Path, demo_model_dir: Path, run_cli: RunCli,
    one_line_error: OneLineError
) -> None:
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    node_config.write_text(node_config.read_text().replace(str(demo_model_dir), str(empty)))
    one_line_error(run_cli("config", "check", "--config", str(node_config)),
                   "[model] path", str(empty), "no config.json")


def test_model_name_that_is_no_folder_is_refused_offline(
    node_config: Path, demo_model_dir: Path, run_cli: RunCli, one_line_error: OneLineError
) -> None:
    node_config.write_text(node_config.read_text().replace(f'"{demo_model_dir}"', '"model"'))
    one_line_error(run_cli("config", "check", "--config", str(node_config)),
                   "[model] path", "HF_HUB_OFFLINE=1")
