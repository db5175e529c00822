"""The ``[fedmkt]`` table: paths resolve against the config file, the public set's hash is
checked before anything starts, and every error names the key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fedswarm.daemon.config import check_files, load_config
from fedswarm.daemon.errors import ConfigError
from fedswarm.daemon.setup_files import init_node
from fedswarm.learning.fedmkt import content_sha256
from fedswarm.p2p.roster import Member, Roster

TEXTS = ["The pilot checks the runway.", "A farmer sows barley in April."]


def make_node(tmp_path: Path, fedmkt_table: str) -> Path:
    """A node folder whose config runs in fedmkt mode with ``fedmkt_table`` appended."""
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "hello world"}\n' * 4)
    model = tmp_path / "model"  # looks like a model folder to the config check; never loaded
    model.mkdir()
    (model / "config.json").write_text("{}")
    result = init_node(tmp_path / "node", "bank-a", model_path=str(model), train_path=str(train),
                       api_port=0)
    Roster("fed", (Member("bank-a", result.peer_id),)).save(tmp_path / "node" / "roster.toml")
    (tmp_path / "node" / "public.jsonl").write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in TEXTS)
    )
    text = result.config_path.read_text().replace('mode = "lora_avg"', 'mode = "fedmkt"')
    assert 'mode = "fedmkt"' in text
    result.config_path.write_text(text + "\n[fedmkt]\n" + fedmkt_table)
    return result.config_path


def test_public_path_resolves_against_the_config_file_and_the_hash_matches(
    tmp_path: Path,
) -> None:
    config = load_config(make_node(
        tmp_path, f'public_path = "public.jsonl"\npublic_sha256 = "{content_sha256(TEXTS)}"\n'
    ))
    assert config.fedmkt.public_path == str(tmp_path / "node" / "public.jsonl")
    check_files(config)  # no error
    assert config.fedmkt.settings().public_sha256 == content_sha256(TEXTS)


def test_public_set_hash_mismatch_names_the_key(tmp_path: Path) -> None:
    config = load_config(make_node(
        tmp_path, f'public_path = "public.jsonl"\npublic_sha256 = "{"0" * 64}"\n'
    ))
    with pytest.raises(ConfigError, match=r"\[fedmkt\] public_sha256: public data set hash"):
        check_files(config)


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ('public_sha256 = "' + "a" * 64 + '"\n', r"\[fedmkt\] public_path: missing"),
        ('public_path = "public.jsonl"\n', r"\[fedmkt\] public_sha256: missing"),
        ('public_path = "nowhere.jsonl"\npublic_sha256 = "' + "a" * 64 + '"\n',
         r"\[fedmkt\] public_path: cannot read"),
    ],
)
def test_fedmkt_mode_needs_a_readable_agreed_public_set(
    tmp_path: Path, table: str, needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle):
        check_files(load_config(make_node(tmp_path, table)))


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ('public_sha256 = "abc"\n', "public_sha256: expected 64 hexadecimal"),
        ("alpha = 1.5\n", "alpha must lie in"),
        ('selection = "best"\n', "[fedmkt] selection: expected one of"),
        ("distill_steps = -1\n", "distill_steps: must be >= 0"),
        ("top_k = 0\n", "top_k must be >= 1"),
        ("typo = 1\n", "unknown key 'typo'"),
        ('homogeneous_exchange = "plain"\n', "[fedmkt] homogeneous_exchange: expected one of"),
        ("support_size = 0\n", "support_size: must be in 1..1024"),
        ("support_size = 5000\n", "support_size: must be in 1..1024"),
    ],
)
def test_bad_fedmkt_values_are_named(tmp_path: Path, table: str, needle: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(make_node(tmp_path, table))
    assert "[fedmkt]" in str(error.value) and needle in str(error.value)


def test_cli_refuses_a_mismatched_public_set_with_exit_2(tmp_path: Path) -> None:
    config = make_node(tmp_path, f'public_path = "public.jsonl"\npublic_sha256 = "{"1" * 64}"\n')
    result = subprocess.run(
        [sys.executable, "-m", "fedswarm.daemon.cli", "config", "check", "--config", str(config)],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "[fedmkt] public_sha256" in lines[0]
