"""Clipping and fixed-point quantisation of weighted updates into the BFV plain field.

Why this shape: BFV adds integers modulo the plain modulus p and wraps silently, so the
grid is chosen so that the sum of k contributions, each bounded by clip_norm and
max_weight, stays inside (-p/2, p/2).  Negative values are stored as p - |v|, and the
decryptor reads anything above p/2 back as negative.

Error bound (documented in docs/security.md): every member contributes
q_i = R(s * w_i * u_i) with |R(x) - x| < delta (delta = 1 for stochastic rounding, which
is unbiased, 0.5 for round-to-nearest).  The decoded average is
sum(q_i) / (s * sum(w_i)), so each coordinate differs from the exact weighted average of
the clipped updates by less than k * delta / (s * sum(w_i)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from fedswarm.secagg.errors import (
    InvalidWeightError,
    NonFiniteUpdateError,
    ParameterSecurityError,
    VectorShapeError,
)
from fedswarm.secagg.params import SecAggParams, batching_plain_modulus


@dataclass(frozen=True)
class QuantisationGrid:
    """The fixed-point grid all members of one group share for one round."""

    plain_modulus: int
    group_size: int
    scale: float  # integers per unit of weight * update
    weight_units: float  # integers per unit of weight (the weight slot is exact)
    delta: float  # maximum rounding error per member, in grid units

    @classmethod
    def for_group(cls, params: SecAggParams, group_size: int) -> QuantisationGrid:
        """Size the grid so k summed contributions never wrap the plain modulus."""
        if group_size < 1:
            raise ParameterSecurityError("group_size must be positive")
        p = batching_plain_modulus(params.poly_modulus_degree, params.plain_modulus_bits)
        half = p // 2
        delta = 1.0 if params.quantisation == "stochastic" else 0.5
        scale = (half - 2 * group_size) / (group_size * params.max_weight * params.clip_norm)
        weight_units = 1.0 / params.weight_resolution
        if scale < 1.0:
            raise ParameterSecurityError(
                "plain modulus too small for this group size, max_weight and clip_norm"
            )
        if group_size * round(params.max_weight * weight_units) >= half:
            raise ParameterSecurityError("weight slot would wrap: lower max_weight/resolution")
        return cls(p, group_size, scale, weight_units, delta)

    def error_bound(self, total_weight: float) -> float:
        """Largest per-coordinate deviation of the decoded average from the exact one."""
        return self.group_size * self.delta / (self.scale * total_weight)


QUANTISE_BLOCK = 1 << 16  # values per step: float64 scratch stays in L2, no page faults


def validate_update(update: np.ndarray) -> np.ndarray:
    """Check an update and return it flattened, without copying when it is contiguous.

    Raised before anything is sent, so a bad local update never costs the group a round.
    """
    array = np.asarray(update)
    if array.size == 0:
        raise VectorShapeError("update is empty")
    if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.integer):
        raise VectorShapeError(f"update dtype {array.dtype} is not numeric")
    flat = array.reshape(-1)
    if np.issubdtype(flat.dtype, np.floating) and not np.isfinite(flat).all():
        raise NonFiniteUpdateError("update contains NaN or Inf")
    return flat


def quantise_weight(weight: float, params: SecAggParams) -> int:
    """The weight as an integer number of weight_resolution units (>= 1)."""
    if not isinstance(weight, int | float) or not math.isfinite(weight):
        raise InvalidWeightError(f"weight {weight!r} is not a finite number")
    if not 0 < weight <= params.max_weight:
        raise InvalidWeightError(
            f"weight {weight} not in (0, {params.max_weight}]: raise SecAggParams.max_weight "
            "(every member must use the same) or pass weights in larger units"
        )
    units = round(weight / params.weight_resolution)
    return max(units, 1)


def l2_norm(flat: np.ndarray) -> float:
    """The L2 norm accumulated in float64, block by block (no full-size float64 copy)."""
    total = 0.0
    for start in range(0, flat.size, QUANTISE_BLOCK):
        part = flat[start : start + QUANTISE_BLOCK].astype(np.float64)
        total += float(np.dot(part, part))
    return math.sqrt(total)


def encode_contribution(
    update: np.ndarray,
    weight: float,
    params: SecAggParams,
    grid: QuantisationGrid,
    rng: np.random.Generator,
) -> np.ndarray:
    """Clip, weight and quantise an update; append the weight slot.  Returns int64 mod p.

    Length is update.size + 1: the last slot carries the integer weight so the decryptor
    can divide by the total weight without any member revealing its own.  The update is
    read, never modified; the work runs in float64 blocks with reused scratch buffers
    (a 4 M-value update paid more for fresh full-size temporaries than for arithmetic).
    """
    flat = validate_update(update)
    weight_units = quantise_weight(weight, params)
    factor = weight_units / grid.weight_units * grid.scale
    clip = params.clip_norm
    if params.clip_mode == "l2":
        norm = l2_norm(flat)
        if norm > clip:
            factor *= clip / norm
    out = np.empty(flat.size + 1, dtype=np.int64)
    block = min(QUANTISE_BLOCK, flat.size)
    scratch = np.empty(block, dtype=np.float64)
    floor = np.empty(block, dtype=np.float64)
    coin = np.empty(block, dtype=np.float64)
    for start in range(0, flat.size, block):
        m = min(block, flat.size - start)
        x = scratch[:m]
        x[...] = flat[start : start + m]
        if params.clip_mode == "coordinate":
            np.clip(x, -clip, clip, out=x)
        x *= factor
        if params.quantisation == "stochastic":
            low = np.floor(x, out=floor[:m])
            x -= low  # now the fractional part in [0, 1)
            rng.random(m, out=coin[:m])
            low += coin[:m] < x  # round up with probability = fraction
            out[start : start + m] = low
        else:
            out[start : start + m] = np.rint(x, out=x)
    out[-1] = weight_units
    np.remainder(out, grid.plain_modulus, out=out)
    return out


def decode_sum(summed: np.ndarray, grid: QuantisationGrid) -> tuple[np.ndarray, float]:
    """Turn the unmasked sum (values mod p, weight slot last) into (average, total weight)."""
    if summed.ndim != 1 or summed.size < 2:
        raise VectorShapeError("summed vector must be 1-D with a weight slot")
    centred = np.where(summed > grid.plain_modulus // 2, summed - grid.plain_modulus, summed)
    weight_units = int(centred[-1])
    if weight_units <= 0:
        raise VectorShapeError("total weight slot is not positive: masks were not removed")
    total_weight = weight_units / grid.weight_units
    average = centred[:-1].astype(np.float64) / (grid.scale * total_weight)
    return average.astype(np.float32), total_weight
