"""A deep demo model, briefly pre-trained, and its emulator package, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from fedswarm.learning.demo_assets import build_demo_model
from fedswarm.learning.offsite import OffsitePackage, build_package

DEEP_PRETRAIN_STEPS = 15


@pytest.fixture(scope="session")
def deep_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_model(
        tmp_path_factory.mktemp("deep") / "model",
        variant="deep-8",
        pretrain_steps=DEEP_PRETRAIN_STEPS,
    )


@pytest.fixture(scope="session")
def package(deep_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> OffsitePackage:
    """8 layers: bottom 2 and top 2 adapters, 2 of the 4 middle layers emulated."""
    return build_package(
        deep_model_dir, tmp_path_factory.mktemp("pkg") / "package", keep=2, bottom=2, top=2
    )
