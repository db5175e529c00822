"""Shared fixtures for daemon tests: a prepared, not-yet-started local federation."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    """The bundled demo model, built once per machine (shared with the demo's cache)."""
    from fedswarm.daemon.demo.local_federation import demo_model_cache_dir
    from fedswarm.learning.demo_assets import build_demo_model

    return build_demo_model(demo_model_cache_dir())


# -- one-member node driven through the CLI ----------------------------------------------


def _run_cli(*args: str, state_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m fedswarm.daemon.cli ARGS`` offline, optionally on another state dir."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if state_dir is not None:
        env["FEDSWARM_STATE_DIR"] = str(state_dir)
    return subprocess.run(
        [sys.executable, "-m", "fedswarm.daemon.cli", *args],
        capture_output=True, text=True, timeout=180, env=env,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Assert exit 2 with exactly one ``fedswarm: error:`` line containing every needle."""
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("fedswarm: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return _run_cli


@pytest.fixture
def one_line_error() -> Callable[..., str]:
    return _one_line_error


@pytest.fixture
def node_config(tmp_path: Path, demo_model_dir: Path) -> Path:
    """Config path of a freshly initialised one-member federation ``fed`` (org bank-a)."""
    from fedswarm.daemon.setup_files import init_node
    from fedswarm.p2p.roster import Member, Roster

    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "hello world"}\n' * 20)
    result = init_node(tmp_path / "node", "bank-a", model_path=str(demo_model_dir),
                       train_path=str(train), api_port=0)
    Roster("fed", (Member("bank-a", result.peer_id),)).save(tmp_path / "node" / "roster.toml")
    return result.config_path
