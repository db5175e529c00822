"""SCAFFOLD's control variates for one member: correct each local step for drift.

SCAFFOLD (Karimireddy et al., ICML 2020) steps with ``g − c_i + c`` instead of ``g``,
where ``c_i`` estimates this member's mean gradient and ``c`` the group's. Over many
local steps on non-IID data, ``g`` pulls towards the member's own optimum; ``c − c_i``
pulls back towards the group's direction. Each round the member sends its new ``c_i``
(inside the averaged vector, so through secure aggregation like the adapter) and the
group's average becomes its next ``c``.

The estimate of ``c_i`` is the mean of the clipped gradients of the member's own steps
since the last exchange (SCAFFOLD's "option I" takes them at the start point with an
extra pass; the steps' own gradients cost nothing). With AdamW the correction is added
to the clipped gradient before the optimiser step, so Adam normalises the corrected
direction. Gradients are clipped to L2 norm ``g``: every coordinate of the mean is at
most ``g``, so the vector carries ``c_i / g`` inside secure aggregation's clip of 1.

The state lives in memory: a restarted member starts again with ``c = c_i = 0``
(plain local steps for one round), as a new member does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from fedswarm.learning.errors import LearningError


@dataclass(frozen=True)
class ControlState:
    """A copy of ``ControlVariates``' state, for the validation gate's rollback."""

    gradient_sum: tuple[torch.Tensor, ...]
    steps: int
    delta: tuple[torch.Tensor, ...]
    own: np.ndarray


class ControlVariates:
    """``c_i``, ``c`` and the running gradient sum, over parameters in adapter-vector
    order (sorted by name)."""

    def __init__(self, params: list[tuple[str, torch.nn.Parameter]]) -> None:
        self._params = [p for _, p in sorted(params, key=lambda item: item[0])]
        self._sizes = [int(p.numel()) for p in self._params]
        self._sum = [torch.zeros(p.shape, dtype=torch.float32, device=p.device)
                     for p in self._params]
        self._steps = 0
        self._delta = [torch.zeros_like(s) for s in self._sum]  # c − c_i
        self._own = np.zeros(sum(self._sizes), dtype=np.float32)  # the c_i last sent

    def state(self) -> ControlState:
        """A copy of everything ``load_group`` and ``correct`` change."""
        return ControlState(tuple(t.clone() for t in self._sum), self._steps,
                            tuple(t.clone() for t in self._delta), self._own.copy())

    def restore(self, state: ControlState) -> None:
        """Return to ``state`` (made by ``state()`` on this object)."""
        self._sum = [t.clone() for t in state.gradient_sum]
        self._steps = state.steps
        self._delta = [t.clone() for t in state.delta]
        self._own = state.own.copy()

    def correct(self) -> None:
        """Record this step's (clipped) gradients, then add ``c − c_i`` to them."""
        with torch.no_grad():
            for param, total, delta in zip(self._params, self._sum, self._delta, strict=True):
                if param.grad is None:
                    continue
                total += param.grad.float()
                param.grad += delta.to(param.grad.device, param.grad.dtype)
        self._steps += 1

    def estimate(self) -> np.ndarray:
        """The new ``c_i``: the mean gradient of the steps since the last exchange (the
        last sent ``c_i`` when no step was taken)."""
        if self._steps == 0:
            return self._own.copy()
        return np.concatenate([(t / self._steps).reshape(-1).cpu().numpy()
                               for t in self._sum]).astype(np.float32, copy=False)

    def load_group(self, group: np.ndarray) -> None:
        """After the group averaged the members' ``c_i``: ``c`` = ``group``, ``c_i`` =
        what we sent, and a fresh gradient sum for the next round."""
        group = np.asarray(group, dtype=np.float32)
        if group.shape != self._own.shape:
            raise LearningError(f"group control variate has shape {group.shape}, "
                                f"expected {self._own.shape}")
        if not np.isfinite(group).all():
            raise LearningError("group control variate contains NaN or inf")
        own = self.estimate()
        offset = 0
        for i, (param, size) in enumerate(zip(self._params, self._sizes, strict=True)):
            chunk = group[offset:offset + size] - own[offset:offset + size]
            self._delta[i] = torch.from_numpy(chunk.copy()).reshape(param.shape).to(param.device)
            offset += size
        self._own = own
        for total in self._sum:
            total.zero_()
        self._steps = 0
