"""The smallest config ``load_config`` accepts, for tests that add one table to it."""

from __future__ import annotations

from pathlib import Path

MINIMAL = """
[node]
org = "bank-a"

[model]
path = "model"

[data]
train_path = "train.jsonl"
"""


def write_config(tmp_path: Path, text: str) -> Path:
    """Write ``text`` as ``tmp_path/config.toml`` and return its path."""
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path
