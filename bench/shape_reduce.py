"""A real model shape cut to a few layers, and its figures scaled back to full depth.

``bench.shape_round`` runs real daemons on real shapes, which a shared 2-core box can
afford only with few decoder layers. Every other dimension stays as published (hidden
and MLP size, attention and key/value heads, head size, vocabulary), so each layer and
the embeddings are exactly the real model's; only the count of identical layers drops.
A LoRA adapter is the same in every layer, so its size is linear in the layer count and
the full model's follows from the measured one. Pure arithmetic, no torch: the fast
test checks it without building anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .shapes import SHAPES, Shape

LAYER_KEY = "num_hidden_layers"
KEPT_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
)
"""What a reduced config must keep from the published one (``head_dim`` where given)."""

SHAPE_ALIASES = {
    "Qwen2.5-0.5B": "Qwen2.5-0.5B",
    "Llama-3.2-1B": "Llama-3.2-1B",
    "Mistral-7B": "Mistral-7B-v0.3",
    "Gemma-2-2B": "Gemma-2-2B",
    "Phi-3-mini": "Phi-3-mini-4k",
}
"""The issue's five shapes, by the names ``--shapes`` takes, to bench.shapes' entries."""


def shape_named(name: str) -> Shape:
    """The bench.shapes entry for an alias or a full name."""
    full = SHAPE_ALIASES.get(name, name)
    for shape in SHAPES:
        if shape.name == full:
            return shape
    raise KeyError(f"unknown shape {name!r} (known: {', '.join(SHAPE_ALIASES)})")


def reduced_config(shape: Shape, layers: int, token_ids: dict[str, int]) -> dict[str, Any]:
    """``shape``'s config with ``layers`` decoder layers and the demo tokenizer's special ids.

    The demo tokenizer's ids are all below 1,024, inside every real vocabulary, so the
    vocabulary (and with it the embedding and head, most of a small model's weights)
    keeps its real size.
    """
    if not 1 <= layers <= shape.config[LAYER_KEY]:
        raise ValueError(f"{shape.name}: layers must be in [1, {shape.config[LAYER_KEY]}]")
    too_big = {k: v for k, v in token_ids.items() if v >= shape.config["vocab_size"]}
    if too_big:
        raise ValueError(f"{shape.name}: token ids {too_big} outside the vocabulary")
    return {**shape.config, LAYER_KEY: layers, **token_ids}


@dataclass(frozen=True)
class Extrapolated:
    """A per-layer figure measured at ``measured_layers`` and scaled to ``real_layers``."""

    measured: int
    measured_layers: int
    real_layers: int

    @property
    def per_layer(self) -> int:
        if self.measured % self.measured_layers:
            raise ValueError(
                f"{self.measured} values do not split evenly over "
                f"{self.measured_layers} identical layers"
            )
        return self.measured // self.measured_layers

    @property
    def full(self) -> int:
        return self.per_layer * self.real_layers
