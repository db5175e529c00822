"""``fedswarm run`` with a bad config exits 2 with one line naming the field or file."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

RunCli = Callable[..., subprocess.CompletedProcess[str]]  # the conftest fixtures' types
OneLineError = Callable[..., str]


def test_missing_field_is_named(
    node_config: Path, run_cli: RunCli, one_line_error: OneLineError
) -> None:
    node_config.write_text(node_config.read_text().replace('org = "bank-a"', ""))
    one_line_error(run_cli("run", "--config", str(node_config)), "[node] org", "missing")


def test_wrong_type_is_named(
    node_config: Path, run_cli: RunCli, one_line_error: OneLineError
) -> None:
    text = node_config.read_text()
    node_config.write_text(text.replace("group_size = 4", 'group_size = "four"'))
    one_line_error(
        run_cli("run", "--config", str(node_config)),
        "[federation] group_size",
        "expected an integer",
    )


def test_identity_readable_by_others_is_refused(
    node_config: Path, run_cli: RunCli, one_line_error: OneLineError
) -> None:
    (node_config.parent / "identity.key").chmod(0o644)
    one_line_error(run_cli("run", "--config", str(node_config)), "identity")


def test_corrupt_identity_is_refused(
    node_config: Path, run_cli: RunCli, one_line_error: OneLineError
) -> None:
    key = node_config.parent / "identity.key"
    key.write_bytes(b"garbage")
    key.chmod(0o600)
    one_line_error(run_cli("run", "--config", str(node_config)), "identity")


def test_unknown_model_path_is_named(
    node_config: Path, demo_model_dir: Path, run_cli: RunCli, one_line_error: OneLineError
) -> None:
    text = node_config.read_text()
    node_config.write_text(text.replace(str(demo_model_dir), "/nonexistent/model"))
    one_line_error(run_cli("run", "--config", str(node_config)), "[model] path",
                          "/nonexistent/model")


def test_directory_that_is_not_a_model_is_named(
    tmp_path: Path,
    node_config: Path,
    demo_model_dir: Path,
    run_cli: RunCli,
    one_line_error: OneLineError,
) -> None:
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    node_config.write_text(node_config.read_text().replace(str(demo_model_dir), str(empty)))
    one_line_error(run_cli("run", "--config", str(node_config)), str(empty))


def test_config_check_accepts_a_good_config(node_config: Path, run_cli: RunCli) -> None:
    result = run_cli("config", "check", "--config", str(node_config))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


@pytest.mark.parametrize("args", [["config", "check", "--config", "/nonexistent.toml"]])
def test_missing_config_file_is_named(
    args: list[str], run_cli: RunCli, one_line_error: OneLineError
) -> None:
    one_line_error(run_cli(*args), "/nonexistent.toml", "not found")
