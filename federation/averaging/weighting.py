"""Sample-count weighting for group averages, identical bit for bit on every member.

Two rules live here.

**Deterministic averaging.** Every member of a group must end the round with the same
adapter, bit for bit, or the federation drifts apart by rounding noise. Floating-point
addition is not associative, so every member sums in the same order (sorted by peer
id), accumulates in float64 and casts to float32 once at the end.

**Carried weight (push-sum).** Weighting each group by raw sample counts is not
enough: in the second round of a grid pass a peer stands for its whole first-round
group, not for its own data. Each peer therefore carries a *mass* ``w_i``, starting
at its sample count. A group averages with weights ``w_i`` and every member leaves
with ``w_i' = sum(w_j) / |group|``. The sum of masses and the sum of ``w_i * x_i``
are then unchanged by every round (mass conservation), so whatever the groups,
dropouts or repeats, the only value all peers can agree on is the global
sample-weighted average. On a perfect grid (all groups of a round the same size) it
is reached exactly after one pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import WeightError


def _check_weight(weight: float) -> float:
    value = float(weight)
    if not math.isfinite(value) or value <= 0.0:
        raise WeightError(f"weights must be finite and > 0 (got {weight!r})")
    return value


def weighted_average(vectors: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Average ``vectors`` with ``weights``, summing in the order given.

    Callers pass vectors sorted by peer id (or use ``weighted_average_by_peer``) so
    that every member computes the same float32 result. Accumulates in float64.
    """
    if len(vectors) == 0:
        raise WeightError("cannot average zero vectors")
    if len(vectors) != len(weights):
        raise WeightError(f"{len(vectors)} vectors but {len(weights)} weights")
    checked = [_check_weight(weight) for weight in weights]
    shape = np.shape(vectors[0])
    total = math.fsum(checked)
    accumulator = np.zeros(shape, dtype=np.float64)
    for index, (vector, weight) in enumerate(zip(vectors, checked, strict=True)):
        array = np.asarray(vector)
        if array.shape != shape:
            raise WeightError(f"vector {index} has shape {array.shape}, expected {shape}")
        as64 = array.astype(np.float64, copy=False)
        if not np.all(np.isfinite(as64)):
            raise WeightError(f"vector {index} holds NaN or infinity")
        accumulator += weight * as64
    accumulator /= total
    return accumulator.astype(np.float32)


def weighted_average_by_peer(contributions: Mapping[str, tuple[np.ndarray, float]]) -> np.ndarray:
    """Average ``{peer_id: (vector, weight)}`` in peer-id order, whatever the mapping's order."""
    peers = sorted(contributions)
    return weighted_average(
        [contributions[peer][0] for peer in peers], [contributions[peer][1] for peer in peers]
    )


def carried_weight(weights: Sequence[float]) -> float:
    """The mass each member carries out of a group: the group's total mass over its size.

    ``math.fsum`` is exactly rounded, so the result does not depend on summation order.
    """
    if len(weights) == 0:
        raise WeightError("a group with no members carries no weight")
    checked = [_check_weight(weight) for weight in weights]
    return math.fsum(checked) / len(checked)
