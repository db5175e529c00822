"""Refuse a group average that honest, clipped inputs could not have produced.

Every mode that averages (``lora_avg`` secure or plain, FedMKT's secure exchange) hands
its ``GroupAverage`` to ``check_group_average`` before anything is applied. Honest
members clip their inputs to ``clip_norm`` (``SecAggParams``: per coordinate, or by L2
norm, which bounds every coordinate too) and weigh in ``(0, max_weight]``, so a weighted
average of k survivors has

* every coordinate in ``[-C - eps, C + eps]`` (``C = clip_norm``, or the tighter
  ``value_bound`` secure aggregation v3 knows: each member publishes the range its values
  lie in, and a hostile slot decodes to garbage that may stay inside the clip but not
  inside that range; ``eps`` the result's ``error_bound``: quantisation for secure
  aggregation, 0 in the clear), and
* a total weight between this member's own weight (it is one of the survivors) and
  ``k * max_weight``.

Anything else means a member (or the aggregator, or the decryptor) added something no
clipped input can carry: a value near p/4 in its masked vector, a lowered weight slot,
a weight of 1e300 in the clear. The member refuses the average (``RoundAbortedError``:
the round is recorded ``aborted`` and the local model kept). A member that lies *within*
the bounds can still pull the average by up to ``C`` per coordinate; that is what
clipping allows any member, and what the bound cannot tell from an honest update.

Plain mode clips each received vector with ``clip_vector`` (the same rule secure
aggregation applies to its inputs), so both modes share one bound.
"""

from __future__ import annotations

import math

import numpy as np
from fedswarm.secagg.params import SecAggParams

from ..errors import RoundAbortedError
from .result import GroupAverage

#: float32 rounding of an average of values within ``C``: a few ulps of ``C``.
_FLOAT32_SLACK = 4 * float(np.finfo(np.float32).eps)


def clip_vector(vector: np.ndarray, params: SecAggParams) -> np.ndarray:
    """Clip one input as secure aggregation's ``encode_contribution`` does (float32 copy)."""
    flat = np.asarray(vector, dtype=np.float32)
    clip = params.clip_norm
    if params.clip_mode == "l2":
        norm = math.sqrt(float(np.dot(flat.astype(np.float64), flat.astype(np.float64))))
        if norm > clip:
            return (flat.astype(np.float64) * (clip / norm)).astype(np.float32)
        return flat.copy()
    return np.clip(flat, -clip, clip)


def check_group_average(
    result: GroupAverage,
    own_weight: float,
    params: SecAggParams,
    *,
    weight_tolerance: float = 0.0,
) -> GroupAverage:
    """Return ``result`` when it lies within what honest inputs give; else ``RoundAbortedError``.

    ``weight_tolerance`` covers how the protocol rounds weights (secure aggregation
    sends each weight as whole multiples of ``weight_resolution``).
    """
    k = len(result.survivors)
    if k < 1:
        raise RoundAbortedError("group average refused: it covers no survivors")
    average = np.asarray(result.average)
    if average.size and not np.isfinite(average).all():
        raise RoundAbortedError("group average refused: it contains NaN or infinity")
    bound, what = params.clip_norm, "the clip bound"
    if result.value_bound is not None and result.value_bound < bound:
        bound, what = result.value_bound, "the group's published range"
    limit = bound + result.error_bound
    limit += _FLOAT32_SLACK * max(limit, 1.0)
    largest = float(np.max(np.abs(average))) if average.size else 0.0
    if not largest <= limit:
        raise RoundAbortedError(
            f"group average refused: max |value| {largest:.6g} exceeds {what} "
            f"{bound:g} + error bound {result.error_bound:.3g}; no clipped inputs "
            "give that (a member added out-of-range values)"
        )
    total = float(result.total_weight)
    low = float(own_weight) - weight_tolerance
    high = k * params.max_weight + k * weight_tolerance
    if not (math.isfinite(total) and low <= total <= high):
        raise RoundAbortedError(
            f"group average refused: total weight {total:.6g} is outside [{low:.6g}, "
            f"{high:.6g}] (own weight .. {k} survivors x max_weight {params.max_weight:g})"
        )
    return result
