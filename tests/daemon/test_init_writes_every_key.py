"""``fedswarm init``: a config that shows every key, one listen default, and what the
roster maintainer needs.

Users copied ``lr``, ``target_modules``, ``eval_path`` and ``eval_batches`` from
docs/learning.md because the generated file did not mention them; ``init`` defaulted
to a listen address the docs contradicted; and a missing model folder was only
noticed when the daemon started. These tests pin each of those.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

from click.testing import CliRunner
from fedswarm.daemon.cli import main
from fedswarm.daemon.config import _SECTIONS, NodeSettings, load_config
from fedswarm.daemon.defaults import DEFAULT_LISTEN
from fedswarm.daemon.setup_files import init_node

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _keys_by_section(text: str) -> dict[str, set[str]]:
    """Keys written or shown commented (``# key = ...``), per ``[section]`` header."""
    sections: dict[str, set[str]] = {}
    current = ""
    for line in text.splitlines():
        header = re.match(r"^#?\s*\[(\w+)\]", line)
        if header:
            current = header.group(1)
            continue
        key = re.match(r"^#?\s*(\w+)\s*=", line)
        if key and current:
            sections.setdefault(current, set()).add(key.group(1))
    return sections


def test_generated_config_names_every_setting_of_every_section(tmp_path: Path) -> None:
    result = init_node(tmp_path / "node", "acme", model_path="/srv/model", eval_path="eval.jsonl")
    text = result.config_path.read_text()
    shown = _keys_by_section(text)
    for section, cls in _SECTIONS.items():
        missing = {f.name for f in dataclasses.fields(cls)} - shown.get(section, set())
        assert not missing, f"[{section}] does not show {sorted(missing)}"
    assert "lr = 2e-4" in text
    # It is a valid config as written, and the values it sets are the documented defaults.
    config = load_config(result.config_path)
    assert config.node.listen == DEFAULT_LISTEN
    assert config.data.eval_path is not None and config.data.eval_path.endswith("eval.jsonl")
    assert config.train.lr == 2e-4
    assert tomllib.loads(text)["federation"]["group_size"] == 4


def test_listen_default_is_one_value_in_code_cli_and_docs() -> None:
    assert NodeSettings.__dataclass_fields__["listen"].default == DEFAULT_LISTEN
    operations = (DOCS / "operations.md").read_text()
    assert f"| `[node] listen` | `{DEFAULT_LISTEN}` |" in operations
    help_text = CliRunner().invoke(main, ["init", "--help"]).output
    assert DEFAULT_LISTEN in help_text


def test_init_refuses_a_missing_model_folder_in_one_line(tmp_path: Path) -> None:
    run = CliRunner().invoke(
        main, ["init", "--dir", str(tmp_path / "node"), "--org", "acme", "--model", "/nonexistent"]
    )
    assert run.exit_code == 2
    lines = run.output.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("fedswarm: error: --model /nonexistent:")
    assert not (tmp_path / "node" / "identity.key").exists()


def test_init_prints_org_peer_id_and_address_for_the_roster(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    run = CliRunner().invoke(main, [
        "init", "--dir", str(tmp_path / "node"), "--org", "acme", "--model", str(model),
        "--listen", "/ip4/0.0.0.0/tcp/4001",
    ])
    assert run.exit_code == 0, run.output
    assert re.search(r"org:\s+acme", run.output)
    assert re.search(r"peer id:\s+12D3KooW\w+", run.output)
    # 0.0.0.0 cannot be dialled: the maintainer is asked for the reachable address instead.
    assert "address:  /ip4/<address other members reach>/tcp/4001" in run.output
    assert "fedswarm roster add --roster roster.toml --org acme --peer-id 12D3KooW" in run.output
