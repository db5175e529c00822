"""``fedswarm run`` with a bad config exits 2 with one line naming the field or file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fedswarm.daemon.setup_files import init_node
from fedswarm.p2p.roster import Member, Roster


def make_node(tmp_path: Path, demo_model_dir: Path) -> Path:
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "hello world"}\n' * 20)
    result = init_node(tmp_path / "node", "bank-a", model_path=str(demo_model_dir),
                       train_path=str(train), api_port=0)
    Roster("fed", (Member("bank-a", result.peer_id),)).save(tmp_path / "node" / "roster.toml")
    return result.config_path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "fedswarm.daemon.cli", *args],
        capture_output=True, text=True, timeout=120, env=env,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_field_is_named(tmp_path: Path, demo_model_dir: Path) -> None:
    config = make_node(tmp_path, demo_model_dir)
    config.write_text(config.read_text().replace('org = "bank-a"', ""))
    assert_one_line_error(run_cli("run", "--config", str(config)), "[node] org", "missing")


def test_wrong_type_is_named(tmp_path: Path, demo_model_dir: Path) -> None:
    config = make_node(tmp_path, demo_model_dir)
    text = config.read_text()
    config.write_text(text.replace("group_size = 4", 'group_size = "four"'))
    assert_one_line_error(
        run_cli("run", "--config", str(config)), "[federation] group_size", "expected an integer"
    )


def test_identity_readable_by_others_is_refused(tmp_path: Path, demo_model_dir: Path) -> None:
    config = make_node(tmp_path, demo_model_dir)
    (config.parent / "identity.key").chmod(0o644)
    assert_one_line_error(run_cli("run", "--config", str(config)), "identity")


def test_corrupt_identity_is_refused(tmp_path: Path, demo_model_dir: Path) -> None:
    config = make_node(tmp_path, demo_model_dir)
    key = config.parent / "identity.key"
    key.write_bytes(b"garbage")
    key.chmod(0o600)
    assert_one_line_error(run_cli("run", "--config", str(config)), "identity")


def test_unknown_model_path_is_named(tmp_path: Path, demo_model_dir: Path) -> None:
    config = make_node(tmp_path, demo_model_dir)
    config.write_text(config.read_text().replace(str(demo_model_dir), "/nonexistent/model"))
    assert_one_line_error(run_cli("run", "--config", str(config)), "[model] path",
                          "/nonexistent/model")


def test_directory_that_is_not_a_model_is_named(tmp_path: Path, demo_model_dir: Path) -> None:
    config = make_node(tmp_path, demo_model_dir)
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    config.write_text(config.read_text().replace(str(demo_model_dir), str(empty)))
    assert_one_line_error(run_cli("run", "--config", str(config)), str(empty))


def test_config_check_accepts_a_good_config(tmp_path: Path, demo_model_dir: Path) -> None:
    config = make_node(tmp_path, demo_model_dir)
    result = run_cli("config", "check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


@pytest.mark.parametrize("args", [["config", "check", "--config", "/nonexistent.toml"]])
def test_missing_config_file_is_named(args: list[str]) -> None:
    assert_one_line_error(run_cli(*args), "/nonexistent.toml", "not found")
