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
from fedswarm.secagg.distributed_dp import NOISE_TAIL, noisy_levels, skellam_noise
from fedswarm.secagg.errors import (
    InvalidWeightError,
    NonFiniteUpdateError,
    ParameterSecurityError,
    VectorShapeError,
)
from fedswarm.secagg.params import MAX_GROUP_V3, SecAggParams, batching_plain_modulus


@dataclass(frozen=True)
class QuantisationGrid:
    """The fixed-point grid all members of one group share for one round.

    v2 (fields == 1): one value per slot, scaled by max_weight so k weighted members
    never wrap.  v3 (params.packed): ``fields`` signed values of ``field_bits`` bits
    share one slot, slot = sum_j q_j * 2**(field_bits * j) mod p; every member's q_j
    lies in [-level, level] and k * level < 2**(field_bits - 1), so the k-member sum of
    each field never reaches its neighbour and the whole slot stays inside (-p/2, p/2).
    Masks are uniform mod p over the whole slot and cancel exactly, so the packed sum
    decrypts exactly and unpacks field by field (decode_sum).
    """

    plain_modulus: int
    group_size: int
    scale: float  # integers per unit of weight * update
    weight_units: float  # integers per unit of weight (the weight slot is exact)
    delta: float  # maximum rounding error per member, in grid units
    fields: int = 1  # values per BFV slot
    field_bits: int = 0  # bits per field (0: unpacked)
    level: int = 0  # largest |quantised value| one member may put in a field
    # group-level DP (params.group_noise): each member's Skellam noise std per value, and
    # the L2 distance one member's data moves its unrounded values (both grid units)
    noise_std: float = 0.0
    sensitivity: float = 0.0

    @classmethod
    def for_group(
        cls,
        params: SecAggParams,
        group_size: int,
        weight_class: int | None = None,
        range_shift: int = 0,
    ) -> QuantisationGrid:
        """Size the grid so k summed contributions never wrap the plain modulus.

        weight_class (v3 only) is the largest ceil(log2(weight units)) in the group; the
        grid then fits weights up to 2**weight_class units instead of max_weight, which
        is what keeps 12-bit fields useful.  None: the class of max_weight.
        range_shift (v3 only) is the smallest range_shift in the group: every member's
        coordinates are within clip_norm / 2**range_shift, and the grid is that much finer.
        """
        if group_size < 1:
            raise ParameterSecurityError("group_size must be positive")
        p = batching_plain_modulus(params.poly_modulus_degree, params.plain_modulus_bits)
        half = p // 2
        delta = 1.0 if params.quantisation == "stochastic" else 0.5
        weight_units = 1.0 / params.weight_resolution
        if group_size * round(params.max_weight * weight_units) >= half:
            raise ParameterSecurityError("weight slot would wrap: lower max_weight/resolution")
        if params.packed:
            return cls._packed(
                params, group_size, weight_class, range_shift, p, delta, weight_units
            )
        scale = (half - 2 * group_size) / (group_size * params.max_weight * params.clip_norm)
        if scale < 1.0:
            raise ParameterSecurityError(
                "plain modulus too small for this group size, max_weight and clip_norm"
            )
        return cls(p, group_size, scale, weight_units, delta)

    @classmethod
    def _packed(
        cls,
        params: SecAggParams,
        k: int,
        weight_class: int | None,
        range_shift: int,
        p: int,
        delta: float,
        weight_units: float,
    ) -> QuantisationGrid:
        if k > MAX_GROUP_V3:
            raise ParameterSecurityError(
                f"{params.protocol} sizes grids for groups of up to {MAX_GROUP_V3}, not {k}"
            )
        top_class = max_weight_class(params)
        if weight_class is None:
            weight_class = top_class
        if not 0 <= weight_class <= top_class:
            raise InvalidWeightError(f"weight class {weight_class} not in 0..{top_class}")
        fields = params.fields_per_slot
        field_bits = -(-p.bit_length() // fields)
        span = sum(1 << (field_bits * j) for j in range(fields))
        level = min(((1 << (field_bits - 1)) - 1) // k, (p // 2) // (k * span))
        if level < 1:
            raise ParameterSecurityError(
                f"{fields} fields per slot leave no room for {k} members: use fewer fields"
            )
        if not 0 <= range_shift <= MAX_RANGE_SHIFT:
            raise ParameterSecurityError(f"range shift {range_shift} not in 0..{MAX_RANGE_SHIFT}")
        noise_std = sensitivity = 0.0
        if params.group_noise is not None:
            room = min((1 << (field_bits - 1)) - 1, (p // 2) // span)
            ratio = params.group_noise.update_clip * (1 << range_shift) / params.clip_norm
            levels = noisy_levels(params.group_noise, room, k, ratio)
            level, noise_std, sensitivity = levels.level, levels.member_std, levels.sensitivity
        reference_weight = (1 << weight_class) / weight_units
        scale = level / (reference_weight * params.clip_norm) * (1 << range_shift)
        return cls(
            p, k, scale, weight_units, delta, fields, field_bits, level, noise_std, sensitivity
        )

    @property
    def packed(self) -> bool:
        return self.field_bits > 0

    def encoded_size(self, n_values: int) -> int:
        """Slots (the weight slot included) that n_values coordinates occupy."""
        return -(-n_values // self.fields) + 1

    def error_bound(self, total_weight: float) -> float:
        """Largest per-coordinate deviation of the decoded average from the exact one.

        With group-level DP it adds NOISE_TAIL standard deviations of the k members'
        summed noise: exceeded with probability about 2.6e-12 per coordinate.
        """
        rounding = self.group_size * self.delta
        noise = NOISE_TAIL * math.sqrt(self.group_size) * self.noise_std
        return (rounding + noise) / (self.scale * total_weight)


def max_weight_class(params: SecAggParams) -> int:
    """The weight class of max_weight: the largest any honest member may claim."""
    return (max(round(params.max_weight / params.weight_resolution), 1) - 1).bit_length()


def weight_class(weight: float, params: SecAggParams) -> int:
    """ceil(log2(weight units)): the coarse weight a v3 member publishes in KEYS.

    Why publish anything: 12-bit fields cannot hold weight * update scaled for
    max_weight (65 536) when real weights are a few hundred, so the group scales for
    2**max(class) instead.  It reveals each member's weight to within a factor of two,
    and nothing finer (docs/security.md).
    """
    return (quantise_weight(weight, params) - 1).bit_length()


QUANTISE_BLOCK = 1 << 16  # values per step: float64 scratch stays in L2, no page faults


MAX_RANGE_SHIFT = 24


def range_shift(flat: np.ndarray, params: SecAggParams) -> int:
    """The largest s with every clipped coordinate within clip_norm / 2**s (0..24).

    Why: LoRA adapters and AdamW moments sit far inside the default clip of 1.0, and
    13-bit fields spent on [-1, 1] leave them a coarse grid.  Each v3 member publishes s
    in KEYS, the group takes the smallest, and the grid covers only that range (no
    honest value is cut).  It reveals each member's largest |coordinate| to within a
    factor of two (docs/security.md).
    """
    largest = 0.0
    for start in range(0, flat.size, QUANTISE_BLOCK):
        part = flat[start : start + QUANTISE_BLOCK]
        largest = max(largest, float(np.max(np.abs(part))))
    clip = params.clip_norm
    if params.clip_mode == "l2":
        norm = l2_norm(flat)
        if norm > clip:
            largest *= clip / norm
    largest = min(largest, clip)
    if largest <= clip / (1 << MAX_RANGE_SHIFT):
        return MAX_RANGE_SHIFT
    shift = max(math.floor(math.log2(clip / largest)), 0)
    while shift > 0 and clip / (1 << shift) < largest:  # float log2 at a power of two
        shift -= 1
    return min(shift, MAX_RANGE_SHIFT)


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
    *,
    norm: float | None = None,
    weight_slot: bool = True,
) -> np.ndarray:
    """Clip, weight and quantise an update, pack it; append the weight slot.  int64 mod p.

    A segment of a larger update (he.segment_jobs) passes the whole update's L2 norm
    and weight_slot=False for every segment but the last.

    Length is grid.encoded_size(update.size): ceil(n / fields) slots, then one slot with
    the integer weight so the decryptor can divide by the total weight without any
    member revealing its own.  The update is read, never modified; the work runs in
    float64 blocks with reused scratch buffers (a 4 M-value update paid more for fresh
    full-size temporaries than for arithmetic).
    """
    flat = validate_update(update)
    weight_units = quantise_weight(weight, params)
    factor = weight_units / grid.weight_units * grid.scale
    clip = params.clip_norm
    if params.clip_mode == "l2":
        if norm is None:
            norm = l2_norm(flat)
        if norm > clip:
            factor *= clip / norm
    fields = grid.fields
    n_slots = -(-flat.size // fields)
    out = np.empty(n_slots + int(weight_slot), dtype=np.int64)
    block = fields * min(QUANTISE_BLOCK // fields, n_slots)
    scratch = np.empty(block, dtype=np.float64)
    floor = np.empty(block, dtype=np.float64)
    coin = np.empty(block, dtype=np.float64)
    quantised = np.zeros(block, dtype=np.int64)
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
            quantised[:m] = low
        else:
            quantised[:m] = np.rint(x, out=x)
        if grid.packed:  # float rounding must never push a value into the next field
            np.clip(quantised[:m], -grid.level, grid.level, out=quantised[:m])
        if grid.noise_std > 0:  # after the clamp: noise is never clamped (distributed_dp)
            quantised[:m] += skellam_noise(rng, m, grid.noise_std)
        used = -(-m // fields) * fields
        quantised[m:used] = 0  # the last slot's unused fields
        _pack(quantised[:used], grid, out[start // fields : (start + used) // fields])
    if weight_slot:
        out[-1] = weight_units
    np.remainder(out, grid.plain_modulus, out=out)
    return out


def _pack(values: np.ndarray, grid: QuantisationGrid, out: np.ndarray) -> None:
    """out[i] = sum_j values[i * fields + j] * 2**(field_bits * j), signed (Horner)."""
    rows = values.reshape(-1, grid.fields)
    out[...] = rows[:, -1]
    for j in range(grid.fields - 2, -1, -1):
        np.left_shift(out, grid.field_bits, out=out)
        out += rows[:, j]


def unpack_fields(centred: np.ndarray, grid: QuantisationGrid) -> np.ndarray:
    """Split signed slot sums into their fields (slots x fields, int64), lowest first.

    Each field sum lies in (-2**(field_bits-1), 2**(field_bits-1)), so the low
    field_bits bits, read as a signed number, are that field exactly; subtract it and
    shift to reach the next.  Garbage in (a hostile sum) still decodes to fields in
    that range, so a bad slot cannot produce an unbounded value.
    """
    rest = centred.astype(np.int64, copy=True)
    out = np.empty((rest.size, grid.fields), dtype=np.int64)
    half = 1 << (grid.field_bits - 1)
    mask = (1 << grid.field_bits) - 1
    for j in range(grid.fields):
        field = out[:, j]
        np.add(rest, half, out=field)
        np.bitwise_and(field, mask, out=field)
        field -= half
        rest -= field
        np.right_shift(rest, grid.field_bits, out=rest)
    return out


def decode_sum(
    summed: np.ndarray, grid: QuantisationGrid, n_values: int | None = None
) -> tuple[np.ndarray, float]:
    """Turn the unmasked sum (slots mod p, weight slot last) into (average, total weight).

    n_values: how many coordinates the slots hold (packed grids pad the last slot);
    None means every field of every slot.  Works block by block, so the only full-size
    array it makes is the float32 average (the whole-array version made five full-size
    int64/float64 temporaries, about 3 GB at 80 M values).

    The weight slot alone is a valid input: the decryptor's last segment when the value
    slots fill whole chunks (stream_decrypt.unmask_segment; 1,572,864 values on v3 with
    128 ciphertexts a chunk, Phi-3-mini's 2-layer adapter + exp_avg in bench.shape_round).
    """
    if summed.ndim != 1 or summed.size < 1:
        raise VectorShapeError("summed vector must be 1-D with a weight slot")
    weight_units = int(summed[-1])
    if weight_units > grid.plain_modulus // 2:
        weight_units -= grid.plain_modulus
    if weight_units <= 0:
        raise VectorShapeError("total weight slot is not positive: masks were not removed")
    return decode_slots(summed[:-1], grid, weight_units, n_values), weight_units / grid.weight_units


def decode_slots(
    slots: np.ndarray, grid: QuantisationGrid, weight_units: int, n_values: int | None = None
) -> np.ndarray:
    """Slots of an unmasked sum (no weight slot) as averages, given the total weight.

    A decryptor working segment by segment reads the weight slot from the last segment
    first (decode_sum) and decodes the others with it.
    """
    capacity = slots.size * grid.fields
    if n_values is None:
        n_values = capacity
    if not capacity - grid.fields < n_values <= capacity:
        raise VectorShapeError(f"{slots.size} slots cannot hold {n_values} values")
    average = np.empty(n_values, dtype=np.float32)
    divisor = grid.scale * weight_units / grid.weight_units
    block = max(QUANTISE_BLOCK // grid.fields, 1)  # slots per step: no full-size temporaries
    for start in range(0, slots.size, block):
        part = slots[start : min(start + block, slots.size)]
        signed = np.where(part > grid.plain_modulus // 2, part - grid.plain_modulus, part)
        integers = unpack_fields(signed, grid).reshape(-1) if grid.packed else signed
        first = start * grid.fields
        count = min(integers.size, n_values - first)
        average[first : first + count] = integers[:count].astype(np.float64) / divisor
    return average
