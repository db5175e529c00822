"""Loading a verified package as a trainable emulator: only the adapter layers learn.

Members (who train) and the owner (who only turns an averaged vector back into layer
weights) load the emulator the same way, so both agree on which tensors the vector holds
and in what order. Without LoRA every parameter of the adapter layers is trainable (the
paper's setting); with LoRA only low-rank matrices on those layers are, which shrinks
the vector each round from whole layers to a few thousand values per layer.
"""

from __future__ import annotations

import torch
from fedswarm.learning.errors import OffsiteError
from fedswarm.learning.model_loading import detect_target_modules, load_base_model
from fedswarm.learning.offsite.layers import decoder_layers
from fedswarm.learning.offsite.package import OffsitePackage
from fedswarm.learning.settings import LoraSettings, ModelSettings
from peft import LoraConfig, get_peft_model


def load_emulator(
    package: OffsitePackage,
    lora: LoraSettings | None = None,
    *,
    seed: int = 0,
    device: str = "auto",
) -> torch.nn.Module:
    """The emulator with every parameter frozen except the adapter layers (or their LoRA)."""
    model, _ = load_base_model(ModelSettings(str(package.path), dtype="float32", device=device))
    layers = decoder_layers(model)
    if len(layers) != package.layout.emulator_layers:
        raise OffsiteError(
            f"{package.path}: {len(layers)} layers, the layout says "
            f"{package.layout.emulator_layers}"
        )
    for p in model.parameters():
        p.requires_grad_(False)
    adapters = sorted(package.layout.adapter_map())
    if lora is None:
        for index in adapters:
            for p in layers[index].parameters():
                p.requires_grad_(True)
        return model
    if lora.peft_type != "LORA":
        raise OffsiteError(f"offsite LoRA supports peft_type 'LORA' only, not {lora.peft_type!r}")
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules or detect_target_modules(model),
        layers_to_transform=adapters,
        layers_pattern="layers",
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, config)  # type: ignore[arg-type,no-any-return]
