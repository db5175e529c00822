"""White-box verification: how many of a member's bits a model's norm scales carry.

The reference is the public base model the consortium started from: Δγ = the suspect
model's scales − the base's. The suspect must have the base's architecture (same norm
layers and widths), else nothing can be read and the error says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from fedswarm.learning.errors import OwnershipError

from .embedding import effective_scales
from .keys import OwnershipKey
from .layout import member_share, norm_widths
from .signature import derive_signature

#: ``trainer.SCALE_DELTAS_FILE`` (not imported: the trainer pulls in the whole training stack)
DELTAS_FILE = "ownership_scale_deltas.safetensors"


@dataclass(frozen=True)
class Verification:
    """The result a member may show: never the key, only its public id and the rate."""

    key_id: str
    bits: int
    detected: float


def verify_scales(suspect: torch.Tensor, base: torch.Tensor, key: OwnershipKey,
                  roster: list[str], member: str, bits: int,
                  widths: Sequence[int]) -> Verification:
    """Detection rate of ``member``'s signature in ``suspect − base`` (concatenated scales).

    ``widths`` are the base's channels per norm layer (``norm_widths``): the readout
    centres within each layer.
    """
    if suspect.shape != base.shape or sum(widths) != base.numel():
        raise OwnershipError(f"the model has {suspect.numel()} normalisation channels, the base "
                             f"{base.numel()}: not a model fine-tuned from this base")
    share = member_share(widths, roster, member, bits)
    signature = derive_signature(key, share, bits)
    return Verification(key.key_id, bits, signature.detected(suspect.float() - base.float()))


def verify_model(suspect: torch.nn.Module, base: torch.nn.Module, key: OwnershipKey,
                 roster: list[str], member: str, bits: int) -> Verification:
    """``verify_scales`` on two loaded models (merged, or PEFT-wrapped with Δ installed)."""
    return verify_scales(effective_scales(suspect), effective_scales(base), key, roster,
                         member, bits, norm_widths(base))


def load_suspect(base_dir: Path, *, model_dir: Path | None = None,
                 adapter_dir: Path | None = None) -> torch.nn.Module:
    """A model to verify: a full model folder, or the base with an exported adapter applied.

    An adapter folder is what ``fedswarm export`` writes: PEFT's LoRA files, plus the norm
    scales' deltas (``ownership_scale_deltas.safetensors``) when it was trained with marks.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from .embedding import apply_deltas

    if (model_dir is None) == (adapter_dir is None):
        raise OwnershipError("give exactly one of a model folder or an adapter folder")
    try:
        if model_dir is not None:
            return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        assert adapter_dir is not None
        base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
        model = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
        deltas = Path(adapter_dir) / DELTAS_FILE
        if deltas.is_file():
            apply_deltas(model, _read_deltas(deltas))
        return model
    except (OSError, ValueError, KeyError) as exc:
        raise OwnershipError(f"cannot load the model to verify: {exc}") from None


def _read_deltas(path: Path) -> dict[str, torch.Tensor]:
    """The exported scale deltas; a truncated or foreign file is an ``OwnershipError``
    naming it (safetensors raises its own exception class, not an ``OSError``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except SafetensorError as exc:
        raise OwnershipError(f"{path}: not a readable scale-deltas file ({exc})") from None
