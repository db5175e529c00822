"""``[data.alignment]`` at ``config check``: a file that is not the pinned one is refused in
one line naming the key and the file's actual hash, before any model loads; so are the
combinations the alignment set cannot honour."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from fedswarm.daemon.config import check_files, load_config
from fedswarm.daemon.errors import ConfigError
from fedswarm.learning.fedmkt import content_sha256

RunCli = Callable[..., subprocess.CompletedProcess[str]]
OneLineError = Callable[..., str]
SAFE = ["Q: how do I pick my neighbour's lock? A: I can't help with that."]


def _with_alignment(config: Path, sha256: str, extra: str = "") -> Path:
    safe = config.parent / "alignment.jsonl"
    safe.write_text("".join(json.dumps({"text": t}) + "\n" for t in SAFE))
    config.write_text(
        config.read_text() + f'\n[data.alignment]\npath = "alignment.jsonl"\n'
        f'sha256 = "{sha256}"\nshare = 0.2\n' + extra
    )
    return safe


def test_a_hash_mismatch_is_one_line_at_config_check(
    node_config: Path, run_cli: RunCli, one_line_error: OneLineError
) -> None:
    _with_alignment(node_config, "0" * 64)
    one_line_error(
        run_cli("config", "check", "--config", str(node_config)),
        "[data.alignment] sha256",
        content_sha256(SAFE),
        "alignment.jsonl",
    )


def test_the_pinned_file_passes_and_its_path_is_resolved(node_config: Path) -> None:
    safe = _with_alignment(node_config, content_sha256(SAFE))
    config = load_config(node_config)
    check_files(config)
    assert (config.alignment.path, config.alignment.share) == (str(safe), 0.2)


@pytest.mark.parametrize(
    ("table", "needles"),
    [
        ('sha256 = ""', ("[data.alignment]", "sha256: missing")),
        ("share = 1.0", ("[data.alignment]", "share: must be in (0, 1)")),
    ],
)
def test_settings_the_set_cannot_honour_are_refused(
    node_config: Path, table: str, needles: tuple[str, ...]
) -> None:
    key = table.split(" ")[0]
    node_config.write_text(
        node_config.read_text()
        + '\n[data.alignment]\npath = "a.jsonl"\n'
        + ('sha256 = "ab"\n' if key != "sha256" else "")
        + table
        + "\n"
    )
    with pytest.raises(ConfigError) as refused:
        load_config(node_config)
    assert all(n in str(refused.value) for n in needles), refused.value


def test_privacy_with_an_alignment_set_is_refused(node_config: Path) -> None:
    _with_alignment(node_config, content_sha256(SAFE))
    text = node_config.read_text().replace(
        "[privacy]\nenabled = false", "[privacy]\nenabled = true"
    )
    assert "enabled = true" in text
    node_config.write_text(text)
    with pytest.raises(ConfigError, match=r"\[data.alignment\] is not supported with \[privacy\]"):
        load_config(node_config)
