"""The ``[fedkseed]`` table: read without torch, every bad value named by its key."""

from __future__ import annotations

from pathlib import Path

import pytest
from fedswarm.daemon.config import load_config
from fedswarm.daemon.errors import ConfigError
from fedswarm.daemon.setup_files import init_node
from fedswarm.learning.fedkseed import KSeedSettings
from fedswarm.p2p.roster import Member, Roster


def make_node(tmp_path: Path, table: str) -> Path:
    """A node folder whose config runs in fedkseed mode with ``table`` as [fedkseed]."""
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "hello world"}\n' * 4)
    model = tmp_path / "model"  # looks like a model folder to the config check; never loaded
    model.mkdir()
    (model / "config.json").write_text("{}")
    result = init_node(
        tmp_path / "node", "bank-a", model_path=str(model), train_path=str(train), api_port=0
    )
    Roster("fed", (Member("bank-a", result.peer_id),)).save(tmp_path / "node" / "roster.toml")
    text = result.config_path.read_text().replace('mode = "lora_avg"', 'mode = "fedkseed"')
    result.config_path.write_text(text + "\n[fedkseed]\n" + table)
    return result.config_path


def test_the_table_selects_the_mode_settings(tmp_path: Path) -> None:
    config = load_config(
        make_node(tmp_path, f'k = 256\nlr = 2e-4\nbase_model_sha256 = "{"A" * 64}"\n')
    )
    settings = config.mode_settings()
    assert isinstance(settings, KSeedSettings)
    assert (settings.k, settings.lr, settings.pro) == (256, 2e-4, True)
    assert settings.base_model_sha256 == "a" * 64  # normalised
    assert settings.vector_size == 512


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("k = 1\n", "k"),
        ("eps = 0\n", "eps"),
        ("lr = -1.0\n", "lr"),
        ("steps_per_round = 0\n", "steps_per_round"),
        ('trainable = "lora"\n', "trainable"),
        ('base_model_sha256 = "abc"\n', "base_model_sha256"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, table: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"\[fedkseed\]:? {key}:"):
        load_config(make_node(tmp_path, table))
