"""Shared fixtures for daemon tests: a prepared, not-yet-started local federation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    """The bundled demo model, built once per machine (shared with the demo's cache)."""
    from fedswarm.daemon.federation_runner import demo_model_cache_dir
    from fedswarm.learning.demo_assets import build_demo_model

    return build_demo_model(demo_model_cache_dir())
