"""White-box verification: how many of a member's bits a model's norm scales carry.

The reference is the public base model the consortium started from: Δγ = the suspect
model's scales − the base's. The suspect must have the base's architecture (same norm
layers and widths), else nothing can be read and the error says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from fedswarm.learning.errors import OwnershipError

from .embedding import effective_scales
from .keys import OwnershipKey
from .layout import member_share
from .signature import derive_signature


@dataclass(frozen=True)
class Verification:
    """The result a member may show: never the key, only its public id and the rate."""

    key_id: str
    bits: int
    detected: float


def verify_scales(suspect: torch.Tensor, base: torch.Tensor, key: OwnershipKey,
                  roster: list[str], member: str, bits: int) -> Verification:
    """Detection rate of ``member``'s signature in ``suspect − base`` (concatenated scales)."""
    if suspect.shape != base.shape:
        raise OwnershipError(f"the model has {suspect.numel()} normalisation channels, the base "
                             f"{base.numel()}: not a model fine-tuned from this base")
    share = member_share(int(base.numel()), roster, member, bits)
    signature = derive_signature(key, share, bits)
    return Verification(key.key_id, bits, signature.detected(suspect.float() - base.float()))


def verify_model(suspect: torch.nn.Module, base: torch.nn.Module, key: OwnershipKey,
                 roster: list[str], member: str, bits: int) -> Verification:
    """``verify_scales`` on two loaded models (merged, or PEFT-wrapped with Δ installed)."""
    return verify_scales(effective_scales(suspect), effective_scales(base), key, roster,
                         member, bits)
