"""``[node] mdns_interface`` is checked before anything starts: an interface that does
not exist is refused in one line naming the key, not found later inside the p2p thread."""

from __future__ import annotations

from pathlib import Path

import pytest
from fedswarm.daemon.config import check_files, load_config
from fedswarm.daemon.errors import ConfigError
from fedswarm.daemon.setup_files import init_node
from fedswarm.p2p.roster import Member, Roster


def node_config(tmp_path: Path, interface: str) -> Path:
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "hello world"}\n' * 4)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")  # never loaded: the check stops first
    result = init_node(
        tmp_path / "node", "bank-a", model_path=str(tmp_path / "model"), train_path=str(train),
        api_port=0,
    )  # fmt: skip
    Roster("fed", (Member("bank-a", result.peer_id),)).save(tmp_path / "node" / "roster.toml")
    text = result.config_path.read_text()
    assert "enable_mdns = false" in text
    text = text.replace(
        "enable_mdns = false", f'enable_mdns = true\nmdns_interface = "{interface}"', 1
    )
    result.config_path.write_text(text)
    return result.config_path


def test_missing_mdns_interface_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = load_config(node_config(tmp_path, "no-such-if0"))
    with pytest.raises(ConfigError, match=r"\[node\] mdns_interface: .*'no-such-if0' does not"):
        check_files(config)


def test_existing_mdns_interface_passes(tmp_path: Path) -> None:
    config = load_config(node_config(tmp_path, "lo"))
    assert config.node.mdns_interface == "lo"
    check_files(config)
