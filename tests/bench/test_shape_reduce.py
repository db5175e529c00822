"""bench.shape_reduce: a real shape cut to a few layers keeps every other dimension, and
the per-layer arithmetic that scales its adapter back to full depth."""

from __future__ import annotations

import pytest

from bench.shape_reduce import (
    KEPT_KEYS,
    SHAPE_ALIASES,
    Extrapolated,
    reduced_config,
    shape_named,
)

DEMO_IDS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


@pytest.mark.parametrize("alias", list(SHAPE_ALIASES))
def test_reduced_config_keeps_hidden_mlp_heads_and_vocabulary(alias: str) -> None:
    shape = shape_named(alias)
    config = reduced_config(shape, 1, DEMO_IDS)
    assert config["num_hidden_layers"] == 1
    for key in KEPT_KEYS:
        assert config.get(key) == shape.config.get(key), key
    assert shape.config["num_hidden_layers"] > 1  # the published config is untouched
    assert {k: config[k] for k in DEMO_IDS} == DEMO_IDS


def test_reduced_config_refuses_ids_outside_the_vocabulary_and_impossible_depths() -> None:
    shape = shape_named("Phi-3-mini")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        reduced_config(shape, 1, {"eos_token_id": 32_064})
    with pytest.raises(ValueError, match="layers"):
        reduced_config(shape, 0, DEMO_IDS)
    with pytest.raises(ValueError, match="layers"):
        reduced_config(shape, 33, DEMO_IDS)
    with pytest.raises(KeyError):
        shape_named("GPT-5")


def test_extrapolation_is_per_layer_times_real_layers() -> None:
    # Llama-3.2-1B, daemon default (q, v at r 8): 53,248 values a layer, 16 layers
    two = Extrapolated(measured=2 * 53_248, measured_layers=2, real_layers=16)
    assert two.per_layer == 53_248
    assert two.full == 851_968  # bench.shapes' meta-device count
    with pytest.raises(ValueError, match="evenly"):
        _ = Extrapolated(measured=101, measured_layers=2, real_layers=16).per_layer
