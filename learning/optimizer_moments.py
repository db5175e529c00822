"""AdamW's moments ⇄ flat float32 vectors laid out exactly like the adapter vector.

Why: a peer's AdamW normalises by the statistics of its *own* domain's gradients, and
averaging the adapter every round does not change that; averaging the moments as well
makes every member step with the group's statistics (docs/learning.md). To average
them with the same machinery as the adapter they must be one vector each, in the
order ``adapter_vector.flatten_state`` uses: parameters sorted by name.

The step counter is never exchanged: each peer keeps its own ``state["step"]``, which
drives AdamW's bias correction and is equal across peers that trained the same rounds.
A parameter that has no state yet (no optimiser step so far) reads as zeros and, when
moments are loaded into it, gets a fresh state at step 0 — what AdamW itself would
create at its first step, holding the loaded moments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from fedswarm.learning.errors import LearningError

NamedParams = Sequence[tuple[str, torch.nn.Parameter]]


@dataclass(frozen=True)
class Moments:
    """First and second moments (flat float32) and each coordinate's AdamW step count."""

    exp_avg: np.ndarray
    exp_avg_sq: np.ndarray
    steps: np.ndarray  # float32, per coordinate: the step of the parameter it belongs to


def _sorted(params: NamedParams) -> list[tuple[str, torch.nn.Parameter]]:
    return sorted(params, key=lambda item: item[0])


def read_moments(optimizer: torch.optim.Optimizer, params: NamedParams) -> Moments:
    """The moments of ``params`` in sorted-name order; zeros where there is no state."""
    m_parts: list[np.ndarray] = []
    v_parts: list[np.ndarray] = []
    s_parts: list[np.ndarray] = []
    for _, p in _sorted(params):
        state = optimizer.state.get(p) or {}
        n = p.numel()
        if "exp_avg" in state:
            m_parts.append(state["exp_avg"].detach().to("cpu", torch.float32).reshape(-1).numpy())
            v_parts.append(
                state["exp_avg_sq"].detach().to("cpu", torch.float32).reshape(-1).numpy()
            )
            s_parts.append(np.full(n, float(state["step"]), dtype=np.float32))
        else:
            m_parts.append(np.zeros(n, dtype=np.float32))
            v_parts.append(np.zeros(n, dtype=np.float32))
            s_parts.append(np.zeros(n, dtype=np.float32))
    return Moments(_join(m_parts), _join(v_parts), _join(s_parts))


def _join(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)


def load_moments(optimizer: torch.optim.Optimizer, params: NamedParams,
                 exp_avg: np.ndarray, exp_avg_sq: np.ndarray) -> None:
    """Write moments back (same layout as ``read_moments``); the step counts stay.

    Everything is checked before anything is written, so a bad vector leaves the
    optimiser exactly as it was.
    """
    ordered = _sorted(params)
    total = sum(p.numel() for _, p in ordered)
    for label, vector in (("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        if vector.ndim != 1 or vector.shape[0] != total:
            raise LearningError(f"{label}: shape {vector.shape}, parameters need ({total},)")
        if not np.isfinite(vector).all():
            raise LearningError(f"{label}: contains NaN or inf")
    if (exp_avg_sq < 0).any():
        raise LearningError("exp_avg_sq: negative values (a second moment is never negative)")
    offset = 0
    with torch.no_grad():
        for _, p in ordered:
            n = p.numel()
            state = optimizer.state[p]
            if "exp_avg" not in state:  # what AdamW's first step would create
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            for key, vector in (("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
                chunk = torch.from_numpy(np.ascontiguousarray(vector[offset:offset + n]))
                state[key].copy_(chunk.reshape(p.shape).to(state[key].device, state[key].dtype))
            offset += n
