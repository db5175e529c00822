"""Make the normalisation scales trainable as small deltas, and the loss that writes the mark.

Each norm's scale becomes ``γ_base + Δ`` through a torch parametrization: the base scale
stays frozen and only Δ (zero at start, float32) is trainable. So the trainer's adapter,
and with it the averaged vector, grows by one small centred value per channel instead of
the raw scales (~1), which would not fit secure aggregation's clip bound; and the forward
pass of the model is unchanged code.
"""

from __future__ import annotations

import numpy as np
import torch
from fedswarm.learning.errors import OwnershipError
from torch.nn.utils import parametrize

from .layout import norm_modules
from .signature import Signature

#: The trainable parameter's name; it appears in adapter-state names (``...ownership_delta``).
DELTA_NAME = "ownership_delta"
#: Δ = GAIN · θ with θ the trained parameter. AdamW moves a parameter by about lr a step
#: whatever its gradient, and averaging divides one member's push on its share by the
#: group size, so at LoRA's learning rate a mark took many rounds to reach its margin.
#: The gain makes the scales move GAIN× faster and keeps θ, what is averaged, GAIN× smaller.
GAIN = 3.0


class ScaleDelta(torch.nn.Module):
    """``weight ↦ weight + GAIN · θ`` with θ trainable, in float32 whatever the model's dtype."""

    def __init__(self, channels: int, device: torch.device) -> None:
        super().__init__()
        self.register_parameter(DELTA_NAME, torch.nn.Parameter(
            torch.zeros(channels, dtype=torch.float32, device=device)))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        delta: torch.Tensor = getattr(self, DELTA_NAME)
        return (weight.float() + GAIN * delta).to(weight.dtype)


def install_scale_deltas(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Give every norm layer a trainable Δ (idempotent); returns them in channel order."""
    deltas: list[torch.nn.Parameter] = []
    for _, module in norm_modules(model):
        if not parametrize.is_parametrized(module, "weight"):
            weight = module.weight
            assert isinstance(weight, torch.Tensor)  # layout.is_norm checked it
            parametrize.register_parametrization(
                module, "weight", ScaleDelta(int(weight.shape[0]), weight.device))
            module.parametrizations.weight.original.requires_grad_(False)  # type: ignore[union-attr]
        deltas.append(getattr(module.parametrizations.weight[0], DELTA_NAME))  # type: ignore[union-attr,index]
    return deltas


def exported_deltas(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Δγ per norm layer, keyed by its plain module name (``model.layers.0.input_layernorm``).

    What an export ships next to the LoRA adapter: base scale + Δγ = the federated scale.
    """
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, module in norm_modules(model):
            if parametrize.is_parametrized(module, "weight"):
                original = module.parametrizations.weight.original  # type: ignore[union-attr]
                assert isinstance(original, torch.Tensor)
                out[name] = (_weight(module).float() - original.float()).cpu().contiguous()
    return out


def apply_deltas(model: torch.nn.Module, deltas: dict[str, torch.Tensor]) -> None:
    """Add exported Δγ to a plain model's norm scales (names as ``exported_deltas`` writes)."""
    modules = dict(norm_modules(model))
    unknown = sorted(set(deltas) - set(modules))
    if unknown:
        raise OwnershipError(f"scale deltas for layers this model lacks: {unknown[:3]}")
    with torch.no_grad():
        for name, delta in deltas.items():
            weight = _weight(modules[name])
            if weight.shape != delta.shape:
                raise OwnershipError(f"{name}: scale delta of shape {tuple(delta.shape)}, "
                                     f"layer has {tuple(weight.shape)}")
            weight.add_(delta.to(weight.device, weight.dtype))


def effective_scales(model: torch.nn.Module) -> torch.Tensor:
    """All norm scales as the model uses them, concatenated in channel order (float32, CPU)."""
    with torch.no_grad():
        return torch.cat([_weight(m).detach().float().cpu() for _, m in norm_modules(model)])


def _weight(module: torch.nn.Module) -> torch.Tensor:
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    return weight


class MarkLoss:
    """The sign loss on a trainer's Δ parameters: ``weight · Signature.loss``."""

    def __init__(self, deltas: list[torch.nn.Parameter], signature: Signature, weight: float,
                 margin: float) -> None:
        self.deltas = deltas
        self.signature = signature
        self.weight = weight
        self.margin = margin
        self._share = torch.as_tensor(signature.share.channels)
        # an orthonormal basis of span(P): the directions the readings see
        basis = np.linalg.qr(signature.projection.astype(np.float64))[0]
        self._basis = torch.as_tensor(basis, dtype=torch.float32)

    def delta(self) -> torch.Tensor:
        """Δγ, all norm channels concatenated (what verification reads on any model)."""
        return GAIN * torch.cat(list(self.deltas))

    def __call__(self) -> torch.Tensor:
        return self.weight * self.signature.loss(self.delta(), self.margin)

    def replace_gradients(self) -> None:
        """Make the deltas' gradient the sign loss's plus the task's on what no bit reads.

        Of the task's gradient on the scales only the part on this member's own share
        *orthogonal to its projection* is kept: it never moves a reading, so it neither
        erodes the member's mark nor (other shares' task gradient being dropped) drifts
        another member's. The rest of the share is free for the task, so the scales
        adapt around the mark instead of LoRA alone: on the demo model this took the
        mark's union-loss cost at margin 0.15 from 1.6 % to none, which allowed the
        margin that resists a thief's norm retraining (docs/ownership.md).
        """
        task = self._free_task_gradient()
        for delta in self.deltas:
            delta.grad = None
        self().backward()
        start = 0
        for delta in self.deltas:
            part = task[start:start + delta.numel()].to(delta.device, delta.dtype)
            start += delta.numel()
            delta.grad = part if delta.grad is None else delta.grad + part

    def _free_task_gradient(self) -> torch.Tensor:
        """The task's gradient on the share minus its component in span(P); zero elsewhere."""
        grad = torch.cat([torch.zeros(d.numel()) if d.grad is None
                          else d.grad.detach().float().cpu() for d in self.deltas])
        own = grad[self._share]
        free = torch.zeros_like(grad)
        free[self._share] = own - self._basis @ (self._basis.T @ own)
        return free

    def detected(self) -> float:
        """How much of the mark the trainer's current scales carry (1.0 = all bits)."""
        return self.signature.detected(self.delta())
