"""Which normalisation channels carry marks, and which share belongs to which member.

Every RMSNorm/LayerNorm scale in the model, in module-name order, forms one list of
channels. Members must not write to the same channels, or averaging would cancel their
marks (FedIPR gives each client its own positions). The split is public and needs no
coordination: a permutation seeded by the sorted roster deals the channels round-robin
to the members in roster order, so every member computes the same disjoint shares.
*Which* of its channels a member uses, and how, stays secret (``signature.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from fedswarm.learning.errors import MarkCapacityError, NoNormLayersError, OwnershipError


def is_norm(module: torch.nn.Module) -> bool:
    """An RMSNorm or LayerNorm with a 1-D learnable scale (Llama, Mistral, Qwen, GPT-2...)."""
    name = type(module).__name__
    weight = getattr(module, "weight", None)
    # after ``embedding.install`` the scale lives in a parametrization; still a norm
    original = getattr(getattr(module, "parametrizations", None), "weight", None)
    if original is not None:
        weight = original.original
    named_norm = "RMSNorm" in name or name.endswith("LayerNorm")
    return ((named_norm or isinstance(module, torch.nn.LayerNorm))
            and isinstance(weight, torch.Tensor) and weight.dim() == 1)


def norm_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The model's norm layers in name order, PEFT's wrapper prefix removed from names."""
    found = [(_plain_name(n), m) for n, m in model.named_modules() if is_norm(m)]
    if not found:
        kind = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise NoNormLayersError(f"{kind}: no RMSNorm/LayerNorm scale to carry an ownership mark")
    return sorted(found, key=lambda item: item[0])


def norm_widths(model: torch.nn.Module) -> tuple[int, ...]:
    """Channels per norm layer, in ``norm_modules`` order (where the layers' scales begin)."""
    widths = []
    for _, module in norm_modules(model):
        original = getattr(getattr(module, "parametrizations", None), "weight", None)
        weight = original.original if original is not None else module.weight
        assert isinstance(weight, torch.Tensor)
        widths.append(int(weight.shape[0]))
    return tuple(widths)


def _plain_name(name: str) -> str:
    """``base_model.model.model.norm`` (PEFT) and ``model.norm`` (merged) name one layer."""
    prefix = "base_model.model."
    return name[len(prefix):] if name.startswith(prefix) else name


@dataclass(frozen=True)
class Share:
    """A member's channels: indices into the concatenation of all norm scales.

    ``layers`` names the norm layer of each channel: the readout centres within a layer,
    so it must know where one layer's scales end (``signature.derive_signature``).
    """

    member: int
    members: int
    channels: np.ndarray  # int64, sorted
    layers: np.ndarray  # int64, the norm layer of each of ``channels``


def roster_seed(roster: list[str]) -> int:
    if len(set(roster)) != len(roster) or not roster:
        raise OwnershipError("roster: must list each member once")
    digest = hashlib.sha256("\n".join(sorted(roster)).encode()).digest()
    return int.from_bytes(digest[:16], "big")


def member_share(widths: int | Sequence[int], roster: list[str], member: str,
                 bits: int) -> Share:
    """This member's disjoint share of all channels; capacity checked against ``bits``.

    ``widths`` is the channels of each norm layer in order (``norm_widths``); one int is
    a single layer of that width. The split depends on the total alone.
    """
    widths = [widths] if isinstance(widths, int) else [int(w) for w in widths]
    total_channels = sum(widths)
    order = sorted(roster)
    if member not in order:
        raise OwnershipError(f"{member!r} is not in the roster, so it has no share of channels")
    index = order.index(member)
    perm = np.random.Generator(np.random.PCG64(roster_seed(roster))).permutation(total_channels)
    channels = np.sort(perm[index::len(order)]).astype(np.int64)
    if len(channels) < bits:
        raise MarkCapacityError(
            f"{total_channels} normalisation channels shared by {len(order)} members leave "
            f"{len(channels)} to {member!r}, fewer than ownership.bits = {bits}; "
            "lower bits (capacity per member falls as members grow)")
    layers = np.searchsorted(np.cumsum(widths), channels, side="right").astype(np.int64)
    return Share(index, len(order), channels, layers)
