"""Flattening for secure aggregation is lossless and order-independent."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fedswarm.learning.adapter_vector import flatten_state, state_fingerprint, unflatten_state
from fedswarm.learning.errors import LearningError


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"b.lora_B": torch.randn(3, 2, generator=g), "a.lora_A": torch.randn(2, 5, generator=g),
            "c.bias": torch.randn(4, generator=g)}


def test_flatten_unflatten_round_trip() -> None:
    state = _state()
    vector, manifest = flatten_state(state)
    assert vector.dtype == np.float32 and vector.shape == (6 + 10 + 4,)
    assert [name for name, _ in manifest] == sorted(state)
    back = unflatten_state(vector, manifest)
    assert set(back) == set(state)
    for name, tensor in state.items():
        assert torch.equal(back[name], tensor)


def test_unflatten_rejects_wrong_length() -> None:
    vector, manifest = flatten_state(_state())
    with pytest.raises(LearningError, match="manifest needs"):
        unflatten_state(vector[:-1], manifest)


def test_fingerprint_tracks_values_not_insertion_order() -> None:
    state = _state()
    reordered = dict(reversed(list(state.items())))
    assert state_fingerprint(state) == state_fingerprint(reordered)
    changed = {k: v.clone() for k, v in state.items()}
    changed["c.bias"][0] += 1e-3
    assert state_fingerprint(changed) != state_fingerprint(state)
