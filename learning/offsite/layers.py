"""Finding a causal LM's stack of decoder layers, and the weights of the adapter layers.

Offsite-tuning moves whole layers between two models (the emulator and the full one),
so both sides need the same notion of "layer i": the ``layers`` ModuleList of the
decoder (Llama, Mistral, Qwen and most current causal LMs). Other shapes are refused.
"""

from __future__ import annotations

import copy

import torch
from fedswarm.learning.errors import OffsiteError
from fedswarm.learning.offsite.layout import OffsiteLayout
from peft import PeftModel

LayerWeights = dict[int, dict[str, torch.Tensor]]
"""Full-model layer index → that layer's ``state_dict`` (CPU float32)."""


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder's layer list; ``OffsiteError`` for a model without one."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None  # type: ignore[operator]
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise OffsiteError(
            f"{type(base).__name__}: no decoder layer list (model.layers) to "
            "split into adapters and emulator"
        )
    return layers


def adapter_layer_weights(model: torch.nn.Module, layout: OffsiteLayout) -> LayerWeights:
    """The emulator's adapter layers as full-model layer weights (LoRA merged in, if any)."""
    if isinstance(model, PeftModel):
        model = copy.deepcopy(model).merge_and_unload()
    layers = decoder_layers(model)
    return {
        full: {
            k: v.detach().to("cpu", torch.float32).clone()
            for k, v in layers[emulated].state_dict().items()
        }
        for emulated, full in layout.adapter_map().items()
    }


def plug_in(full_model: torch.nn.Module, weights: LayerWeights, layout: OffsiteLayout) -> None:
    """Replace the full model's adapter layers with ``weights`` (the owner's step)."""
    layers = decoder_layers(full_model)
    if len(layers) != layout.total:
        raise OffsiteError(
            f"the full model has {len(layers)} layers; the package was cut "
            f"from one with {layout.total}"
        )
    if set(weights) != set(layout.adapter_map().values()):
        raise OffsiteError(
            f"adapter layers {sorted(weights)} do not match the layout's "
            f"{sorted(layout.adapter_map().values())}"
        )
    for index, state in weights.items():
        try:
            layers[index].load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise OffsiteError(
                f"adapter layer {index} does not fit the full model: {first}"
            ) from None
