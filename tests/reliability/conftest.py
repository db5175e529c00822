"""Shared fixtures for reliability tests: skip cleanly where namespaces cannot be made."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def netns_ready() -> None:
    """Skip (with the reason) unless this machine lets us create namespaces and TUNs."""
    from bench.netns_federation import unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
