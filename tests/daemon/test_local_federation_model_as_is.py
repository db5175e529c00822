"""LocalFederation(demo_model=False) uses a model folder as it is (bench.shape_round)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from fedswarm.daemon.demo.local_federation import LocalFederation
from fedswarm.daemon.errors import DemoError


def test_a_model_folder_as_is_is_not_built_and_its_targets_are_left_to_detection(
    tmp_path: Path,
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")  # not a demo model: building would refuse it
    federation = LocalFederation(tmp_path / "fed", 3, 1, model_dir=model, demo_model=False)
    federation.prepare()
    for peer in federation.peers:
        config = tomllib.loads(peer.config_path.read_text())
        assert Path(config["model"]["path"]) == model
        assert "target_modules" not in config["lora"]
    assert sorted(p.name for p in model.iterdir()) == ["config.json"]


def test_a_model_folder_as_is_runs_lora_avg_only(tmp_path: Path) -> None:
    federation = LocalFederation(
        tmp_path, 3, 1, mode="fedmkt", model_dir=tmp_path / "m", demo_model=False
    )
    with pytest.raises(DemoError, match="lora_avg only"):
        federation.prepare()
