"""Moving the weights along seeds: perturbing, stepping, and the canonical replay.

Any model FedKSeed reaches is ``w0 + sum_j A_j z_j`` (the accumulated scalars already
carry the minus sign and the learning rate). Floating-point addition is not
associative, so "the same model" needs one order: ``replay`` starts from the base
weights and adds ``A_j z_j`` for j = 0 .. K-1, skipping zeros, each as one fp32
addition (``perturbation``: z is +-1, so ``a * z`` is exact). Members of a group end a
round with the same A, so a replay gives them the same bytes, on any device. The cost
is one pass over the tuned weights per non-zero seed (measured in docs/fedkseed.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .parameters import TunedTensor
from .perturbation import direction


@torch.no_grad()
def add_direction(tensors: Sequence[TunedTensor], seed: int, scale: float) -> None:
    """``w += scale * z_seed`` on every tuned tensor, in place."""
    scale32 = float(np.float32(scale))  # the fp32 value every device adds
    for tensor in tensors:
        param = tensor.param
        z = direction(seed, tensor.index, param.numel(), param.device).view(param.shape)
        param.add_(z.to(param.dtype), alpha=scale32)


@torch.no_grad()
def replay(
    tensors: Sequence[TunedTensor],
    base: Sequence[torch.Tensor],
    seeds: np.ndarray,
    scalars: np.ndarray,
) -> int:
    """Set the tuned weights to ``base + sum_j scalars[j] z_j`` in canonical order.

    ``base`` holds the base weights in the same order as ``tensors``. Returns how many
    seeds were applied (the non-zero scalars).
    """
    if len(base) != len(tensors):
        raise ValueError(f"{len(base)} base tensors for {len(tensors)} tuned tensors")
    scalars = np.asarray(scalars, dtype=np.float32)
    if scalars.shape != seeds.shape:
        raise ValueError(f"{scalars.shape[0]} scalars for {seeds.shape[0]} seeds")
    for tensor, start in zip(tensors, base, strict=True):
        tensor.param.copy_(start.to(tensor.param.device))
    used = np.flatnonzero(scalars)
    for tensor in tensors:
        param = tensor.param
        flat = param.view(-1)
        for j in used:
            z = direction(int(seeds[j]), tensor.index, flat.numel(), param.device)
            flat.add_(z, alpha=float(scalars[j]))
    return int(used.size)
