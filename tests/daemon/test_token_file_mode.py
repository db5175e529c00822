"""The API token file is refused, like the identity key, when group or others can access it.

The token opens the dashboard and API; a copy readable by another local user is as good
as the identity key for spying on (or, with the dashboard, steering) the node. The check
is the identity key's own (``owner_only_problem``); these tests drive the real CLI in a
subprocess on a node made by ``init_node`` (no model is loaded: ``config check`` and
``run`` stop at the token).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fedswarm.daemon.setup_files import init_node
from fedswarm.p2p.errors import IdentityError
from fedswarm.p2p.identity import Identity, owner_only_problem
from fedswarm.p2p.roster import Member, Roster

from .conftest import _one_line_error, _run_cli


@pytest.fixture
def light_node(tmp_path: Path) -> Path:
    """A one-member node whose config passes every check up to the token."""
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "hello world"}\n' * 4)
    model = tmp_path / "model"  # looks like a model folder to the config check; never loaded
    model.mkdir()
    (model / "config.json").write_text("{}")
    result = init_node(tmp_path / "node", "bank-a", model_path=str(model),
                       train_path=str(train), api_port=0)
    Roster("fed", (Member("bank-a", result.peer_id),)).save(tmp_path / "node" / "roster.toml")
    return result.config_path


def test_init_writes_the_token_0600(light_node: Path) -> None:
    token = light_node.parent / "api.token"
    assert os.stat(token).st_mode & 0o777 == 0o600
    result = _run_cli("config", "check", "--config", str(light_node))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("mode", [0o640, 0o604], ids=lambda m: f"{m:04o}")
def test_token_accessible_by_group_or_others_is_refused(light_node: Path, mode: int) -> None:
    token = light_node.parent / "api.token"
    os.chmod(token, mode)
    for command in ("config", "run"):
        args = ["config", "check"] if command == "config" else ["run"]
        line = _one_line_error(
            _run_cli(*args, "--config", str(light_node)),
            "[api] token_file", str(token), f"mode is {mode:04o}", f"chmod 600 {token}",
        )
        assert "identity" not in line


def test_read_only_owner_token_is_accepted(light_node: Path) -> None:
    os.chmod(light_node.parent / "api.token", 0o400)  # what systemd's LoadCredential gives
    result = _run_cli("config", "check", "--config", str(light_node))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", ["status", "dashboard"])
def test_client_commands_refuse_a_shared_token_before_using_it(
    light_node: Path, command: str
) -> None:
    token = light_node.parent / "api.token"
    os.chmod(token, 0o644)
    _one_line_error(_run_cli(command, "--config", str(light_node)), "token_file", str(token))


def test_token_and_identity_share_one_mode_check(tmp_path: Path) -> None:
    key = tmp_path / "identity.key"
    Identity.generate().save(key)
    os.chmod(key, 0o640)
    with pytest.raises(IdentityError) as info:
        Identity.load(key)
    assert str(info.value) == owner_only_problem(key, os.stat(key).st_mode, "identity file")
    assert owner_only_problem(key, 0o100600, "identity file") is None
