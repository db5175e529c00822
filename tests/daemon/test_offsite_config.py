"""The ``[offsite]`` table: required with ``mode = "offsite"`` and only then, paths resolve
against the config file, errors are one line naming the key, and no torch is imported."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fedswarm.daemon.config import check_files, load_config
from fedswarm.daemon.errors import ConfigError
from fedswarm.daemon.setup_files import init_node
from fedswarm.federation.offsite.settings import OffsiteSettings
from fedswarm.p2p.roster import Member, Roster

PACKAGE_ID = "ab" * 32

RunCli = Callable[..., subprocess.CompletedProcess[str]]  # the conftest fixtures' types
OneLineError = Callable[..., str]


def make_node(tmp_path: Path, mode: str, offsite_table: str | None) -> Path:
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "hello world"}\n' * 4)
    result = init_node(tmp_path / "node", "bank-a", model_path=str(tmp_path / "not-here"),
                       train_path=str(train), api_port=0)
    Roster("fed", (Member("bank-a", result.peer_id, role="model_owner"),)).save(
        tmp_path / "node" / "roster.toml")
    text = result.config_path.read_text().replace('mode = "lora_avg"', f'mode = "{mode}"')
    if offsite_table is not None:
        text += "\n[offsite]\n" + offsite_table
    result.config_path.write_text(text)
    return result.config_path


def test_offsite_settings_resolve_and_members_need_no_model_folder(tmp_path: Path) -> None:
    config = load_config(make_node(
        tmp_path, "offsite", f'package_id = "{PACKAGE_ID}"\npackage_dir = "pkg"\n'))
    assert config.mode_settings() == OffsiteSettings(package_id=PACKAGE_ID, package_dir="pkg")
    assert config.offsite_package_dir == tmp_path / "node" / "pkg"
    assert config.offsite_export_dir == config.state_dir / "offsite-export"
    check_files(config)  # [model] is the owner's, loaded at start; members fetch the package


@pytest.mark.parametrize("mode,table,expected", [
    ("offsite", None, r"\[offsite\] missing \(required when federation.mode = 'offsite'"),
    ("lora_avg", f'package_id = "{PACKAGE_ID}"\n', r"\[offsite\] is set but federation.mode"),
    ("offsite", 'package_id = "abc"\n', r"\[offsite\]: package_id: must be the 64-hex-digit"),
    ("offsite", f'package_id = "{PACKAGE_ID}"\nlora = "yes"\n', r"\[offsite\] lora"),
    ("offsite", f'package_id = "{PACKAGE_ID}"\nowner = "me"\n', r"unknown key 'owner'"),
])
def test_offsite_config_errors_are_one_line(
    tmp_path: Path, mode: str, table: str | None, expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected) as error:
        load_config(make_node(tmp_path, mode, table))
    assert "\n" not in str(error.value)


def test_offsite_config_check_imports_no_torch(tmp_path: Path) -> None:
    path = make_node(tmp_path, "offsite", f'package_id = "{PACKAGE_ID}"\n')
    script = (
        "import sys\n"
        "from fedswarm.daemon.config import check_files, load_config\n"
        f"check_files(load_config({str(path)!r}))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'transformers', 'peft', 'libp2p', 'tenseal')))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_run_refuses_an_owner_without_its_package_in_one_line(
    tmp_path: Path, run_cli: RunCli, one_line_error: OneLineError
) -> None:
    """Only the daemon knows the roster's roles: the owner's package is checked at start."""
    path = make_node(tmp_path, "offsite", f'package_id = "{PACKAGE_ID}"\npackage_dir = "pkg"\n')
    one_line_error(run_cli("run", "--config", str(path)), "[offsite] package_dir", "pkg")


def test_run_refuses_an_offsite_roster_without_a_model_owner_in_one_line(
    tmp_path: Path, run_cli: RunCli, one_line_error: OneLineError
) -> None:
    path = make_node(tmp_path, "offsite", f'package_id = "{PACKAGE_ID}"\n')
    roster = Roster.load(path.parent / "roster.toml")
    Roster(roster.federation_id, tuple(
        dataclasses.replace(m, role="member") for m in roster.members
    )).save(path.parent / "roster.toml")
    one_line_error(run_cli("run", "--config", str(path)), "roster.toml",
                   'role = "model_owner"')
