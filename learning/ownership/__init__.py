"""FedIPR-style ownership marks: each member embeds secret bits in the norm scales.

``keys`` holds the member's secret, ``layout`` splits the channels between members,
``signature`` derives the bits and projection and reads them, ``embedding`` makes the
scales trainable and defines the sign loss, ``verify`` checks any model against a key.
``triggers`` derives the optional black-box mark (secret prompts the model learns to
answer) and measures it. ``attach_mark`` is what ``LocalTrainer`` calls (docs/ownership.md).

Only the key file and ``MarkPlan`` are imported eagerly: ``fedswarm config check`` reads
the key without paying for torch; everything else is imported on first use (PEP 562).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fedswarm.learning.lazy_exports import import_lazily
from fedswarm.learning.settings import OwnershipSettings

from .keys import OwnershipKey, read_key_file, write_key_file

if TYPE_CHECKING:
    import torch

    from .embedding import MarkLoss, effective_scales, install_scale_deltas
    from .layout import member_share, norm_modules, norm_widths
    from .signature import Signature, derive_signature
    from .verify import Verification, verify_model, verify_scales


@dataclass(frozen=True)
class MarkPlan:
    """Everything a trainer needs to write one member's mark."""

    settings: OwnershipSettings
    key: OwnershipKey
    roster: tuple[str, ...]
    member: str


def attach_mark(model: torch.nn.Module, plan: MarkPlan) -> MarkLoss:
    """Install trainable Δ scales on ``model`` and return the member's sign loss on them."""
    from .embedding import MarkLoss, install_scale_deltas
    from .layout import member_share
    from .signature import derive_signature

    deltas = install_scale_deltas(model)
    widths = [int(d.numel()) for d in deltas]
    share = member_share(widths, list(plan.roster), plan.member, plan.settings.bits)
    signature = derive_signature(plan.key, share, plan.settings.bits)
    return MarkLoss(deltas, signature, plan.settings.weight, plan.settings.margin)


_LAZY = {
    "MarkLoss": "embedding",
    "effective_scales": "embedding",
    "install_scale_deltas": "embedding",
    "member_share": "layout",
    "norm_modules": "layout",
    "norm_widths": "layout",
    "Signature": "signature",
    "derive_signature": "signature",
    "Verification": "verify",
    "verify_model": "verify",
    "verify_scales": "verify",
}


def __getattr__(name: str) -> Any:
    return import_lazily(__name__, _LAZY, globals(), name)


__all__ = [
    "MarkLoss",
    "MarkPlan",
    "OwnershipKey",
    "Signature",
    "Verification",
    "attach_mark",
    "derive_signature",
    "effective_scales",
    "install_scale_deltas",
    "member_share",
    "norm_modules",
    "norm_widths",
    "read_key_file",
    "verify_model",
    "verify_scales",
    "write_key_file",
]
