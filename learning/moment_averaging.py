"""The vector a group averages when AdamW's first moment travels with the adapter, and back.

Layout: ``[adapter | exp_avg / g]`` with ``g = max_grad_norm``; each peer keeps its own
``exp_avg_sq`` and step count.

Why this shape (docs/learning.md, "Averaging optimiser state"; docs/results.md):

* Averaging ``exp_avg`` alone closes the fed/central gap as well as averaging both
  moments (1.0066 vs 1.0061 in process, 45 × 2 rounds) for 2× the vector instead of 3×,
  and it never puts a second moment through quantisation: ``exp_avg_sq`` spans
  ~1e-19..1e-6 on the demo model, far below the secure-aggregation grid.
* Gradients are clipped to L2 norm ``g`` before every step, so each coordinate of
  ``exp_avg`` is at most ``g`` in magnitude. Dividing by ``g`` puts it in [-1, 1], inside
  the default ``clip_norm``: secure aggregation never cuts it, whatever the gradient scale.
* After averaging, ``|exp_avg| <= K_t * sqrt(exp_avg_sq)`` is enforced with the peer's own
  second moment, where ``K_t`` is the Cauchy–Schwarz bound of AdamW's two exponential
  averages after ``t`` steps. A peer's own moments always satisfy it, and it bounds the
  next AdamW step by what AdamW could take on its own. It catches quantisation noise
  (~1e-6 with the demo's weights) landing where the own ``sqrt(exp_avg_sq)`` is ~1e-10,
  which Adam would otherwise divide by ``eps`` = 1e-8: a step ~100× too large.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from fedswarm.learning.errors import LearningError
from fedswarm.learning.optimizer_moments import Moments

PARTS_WITH_MOMENTS = 2  # adapter, exp_avg


@dataclass(frozen=True)
class AveragedState:
    """What a member applies after the group average: adapter and (maybe) moments."""

    adapter: np.ndarray
    exp_avg: np.ndarray | None = None
    exp_avg_sq: np.ndarray | None = None  # the member's own, unchanged


def averaged_length(adapter_size: int, with_moments: bool) -> int:
    """How many values a member sends; members that disagree cannot average together."""
    return adapter_size * (PARTS_WITH_MOMENTS if with_moments else 1)


def layout_note(adapter_size: int, with_moments: bool, marker: int = 0) -> str:
    """One phrase for log lines that explains a length mismatch between members.

    ``marker``: how many values follow (SCAFFOLD's control variate, the settings marker
    of ``federation/averaging/agreement``).
    """
    what = f"{adapter_size} adapter values + AdamW exp_avg" if with_moments else "adapter only"
    if marker:
        what += f" + {marker} control-variate / settings-marker values"
    return (f"we send {averaged_length(adapter_size, with_moments) + marker} values ({what}); "
            "every member must set the same [federation] average_optimizer_state, "
            "freeze_lora_a, group_momentum and scaffold")


def explain_refusal(reason: str, adapter_size: int, with_moments: bool, marker: int = 0) -> str:
    """Add our layout to a peer's length refusal ("update has N values, expected M")."""
    if " values, expected " not in reason:
        return reason
    return f"{reason} ({layout_note(adapter_size, with_moments, marker)})"


def moment_bound(steps: np.ndarray, beta1: float, beta2: float) -> np.ndarray:
    """``K_t``: the largest ``|exp_avg| / sqrt(exp_avg_sq)`` AdamW can reach after t steps.

    ``exp_avg = Σ a_j g_j`` and ``exp_avg_sq = Σ b_j g_j²`` with ``a_j = (1-β1)β1^j`` and
    ``b_j = (1-β2)β2^j``; Cauchy–Schwarz gives ``K_t² = Σ_{j<t} a_j² / b_j``.
    """
    ratio = beta1 * beta1 / beta2
    head = (1.0 - beta1) ** 2 / (1.0 - beta2)
    t = steps.astype(np.float64)
    series = t if ratio == 1.0 else (1.0 - ratio ** t) / (1.0 - ratio)
    return np.sqrt(head * series)


def encode(adapter: np.ndarray, moments: Moments | None, grad_unit: float) -> np.ndarray:
    """The vector to average: the adapter alone, or with ``exp_avg`` as described above."""
    if moments is None:
        return adapter.astype(np.float32, copy=False)
    if moments.exp_avg.shape != adapter.shape:
        raise LearningError("moments and adapter have different lengths")
    return np.concatenate([adapter, moments.exp_avg / grad_unit]).astype(np.float32, copy=False)


def decode(vector: np.ndarray, adapter_size: int, own: Moments | None, grad_unit: float,
           betas: tuple[float, float]) -> AveragedState:
    """Split an averaged vector; the averaged ``exp_avg`` is bounded by ``K_t·sqrt(own v)``.

    ``own`` (this member's moments before averaging) supplies the second moment and the
    step counts, which every peer keeps for itself. ``None``: the vector is the adapter.
    """
    flat = np.asarray(vector, dtype=np.float32)
    expected = averaged_length(adapter_size, own is not None)
    if flat.ndim != 1 or flat.shape[0] != expected:
        raise LearningError(f"averaged vector has shape {flat.shape}, expected ({expected},): "
                            + layout_note(adapter_size, own is not None))
    if not np.isfinite(flat).all():
        raise LearningError("averaged vector contains NaN or inf")
    adapter = flat[:adapter_size]
    if own is None:
        return AveragedState(adapter)
    root = np.sqrt(np.maximum(own.exp_avg_sq.astype(np.float64), 0.0))
    limit = moment_bound(own.steps, *betas) * root
    exp_avg = np.clip(flat[adapter_size:].astype(np.float64) * grad_unit, -limit, limit)
    return AveragedState(adapter, exp_avg.astype(np.float32), own.exp_avg_sq)
