"""A member's secret signature over its share of channels, and how much of it a model shows.

From the key alone come ``bits`` random signs b and a random projection P (share × bits,
unit-norm Gaussian columns). The mark reads ``sign(Pᵀ Δγ) = b``, where Δγ is how far the
share's scales moved from the public base model. Reading a projection of many channels
instead of single channels (FedIPR's "secret random projection") spreads each bit over
the whole share, so no one channel gives it away and small per-channel changes (a
thief's fine-tuning, pruning) shift each reading only a little. Measured against the
base, a model that never carried the mark reads random signs: about half the bits.

Each column of P sums to zero over the share's channels *within each norm layer*. A
thief who retrains the scales moves a whole layer's scales together (on the demo model
the final norm's scales all rose by about 0.5 in 200 steps, against about 0.05 per
channel around that); a zero-sum column reads none of that common mode, so only the
per-channel part of the drift can flip bits. The mark, trained through the same P, lies
in its span and loses nothing (docs/ownership.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .keys import OwnershipKey
from .layout import Share


@dataclass(frozen=True)
class Signature:
    """What a member proves: ``bits`` signs over its channels, read through ``projection``."""

    share: Share
    bits: np.ndarray  # float32, ±1
    projection: np.ndarray  # float32, (len(share.channels), bits)

    def __repr__(self) -> str:  # the bits and projection are the secret
        return f"Signature(bits={len(self.bits)}, channels={len(self.share.channels)})"

    def readings(self, delta: torch.Tensor) -> torch.Tensor:
        """Pᵀ Δγ[share] for the full concatenated Δγ (differentiable: the sign loss uses it)."""
        index = torch.as_tensor(self.share.channels, device=delta.device)
        proj = torch.as_tensor(self.projection, device=delta.device, dtype=delta.dtype)
        return delta.index_select(0, index) @ proj

    def detected(self, delta: torch.Tensor) -> float:
        """Fraction of bits whose reading has the signature's sign (0 counts as missed)."""
        with torch.no_grad():
            readings = self.readings(delta.detach().float()).cpu().numpy()
        return float(np.mean(np.sign(readings) == self.bits))

    def loss(self, delta: torch.Tensor, margin: float) -> torch.Tensor:
        """FedIPR's sign loss: Σ over bits of ReLU(margin − b · reading).

        A sum, as in FedIPR, not a mean: each bit's pull must hold its own against the
        task gradient on the same scales, whatever the number of bits.
        """
        b = torch.as_tensor(self.bits, device=delta.device, dtype=delta.dtype)
        return torch.relu(margin - b * self.readings(delta)).sum()


def derive_signature(key: OwnershipKey, share: Share, bits: int) -> Signature:
    """The same key and share always give the same signature; another key, an unrelated one."""
    rng = np.random.Generator(np.random.PCG64(key.derive_seed("ownership-bits")))
    signs = rng.integers(0, 2, size=bits).astype(np.float32) * 2 - 1
    rng = np.random.Generator(np.random.PCG64(key.derive_seed("ownership-projection")))
    projection = rng.standard_normal((len(share.channels), bits))
    for layer in np.unique(share.layers):  # zero-sum per layer: blind to common-mode drift
        rows = share.layers == layer
        projection[rows] -= projection[rows].mean(axis=0, keepdims=True)
    norms = np.linalg.norm(projection, axis=0, keepdims=True)
    projection = (projection / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    return Signature(share, signs, projection)
