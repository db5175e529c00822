"""One zeroth-order step: two forward passes, one scalar, no backward pass.

g = (L(w + eps z) - L(w - eps z)) / 2 eps estimates the loss's slope along z; the step
moves w by -lr g z. Nothing here keeps gradients or optimiser state: a member needs
only inference memory. The weights are perturbed in place and put back by adding the
opposite perturbation (a few fp32 roundings off, which the round's replay erases).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .parameters import TunedTensor
from .replay import add_direction


@dataclass(frozen=True)
class ProjectedGradient:
    """What one step measured: the projected gradient and the two losses."""

    g: float
    loss_plus: float
    loss_minus: float

    @property
    def loss(self) -> float:
        return 0.5 * (self.loss_plus + self.loss_minus)


@torch.no_grad()
def projected_gradient(
    tensors: Sequence[TunedTensor], seed: int, eps: float, loss: Callable[[], float]
) -> ProjectedGradient:
    """Measure g along ``seed`` with ``loss`` (the same batch twice); weights restored."""
    offset = 0.0
    try:
        add_direction(tensors, seed, eps)
        offset = eps
        plus = loss()
        add_direction(tensors, seed, -2.0 * eps)
        offset = -eps
        minus = loss()
    finally:
        if offset:
            add_direction(tensors, seed, -offset)
    return ProjectedGradient((plus - minus) / (2.0 * eps), plus, minus)
