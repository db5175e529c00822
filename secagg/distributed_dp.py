"""Group-level (distributed) DP: integer noise each member adds inside secure aggregation.

Why here: the noise must be added on the integer grid the sum is computed on, before
masking, so that nobody (A, D, or a coalition of up to ``colluders`` members who know
their own noise) ever sees a member's value without the other members' noise on it.
What is proved is about the *integer sum* the protocol reveals; decoding it into an
average is post-processing.

The mechanism (docs/privacy.md, "Group-level DP inside secure aggregation"):

* Each member's value vector on the grid is ``q = R(s * w * x)`` with ``x`` its update,
  ``s`` the grid scale, ``w`` its weight and ``R`` stochastic rounding. The caller clips
  the part of ``x`` that depends on the member's data this round (its delta from an
  anchor that is already public to the group) to L2 norm ``update_clip``; the grid is
  sized for the group's reference weight ``w_ref >= w``, so one member's data moves the
  unrounded vector by at most ``Delta = s * w_ref * update_clip`` in L2.
* Rounding: coupling both neighbours' rounding on the same uniform draws, each integer
  coordinate moves by less than its real move + 1, so the integer vectors differ by at
  most ``Delta + sqrt(d)`` in L2 (d coordinates). That bound is deterministic (no extra
  delta); Kairouz et al. 2021's conditional rounding would make it about
  ``sqrt(Delta**2 + d / 4)`` and is not implemented.
* Noise: each member adds Skellam noise (difference of two Poisson draws; Agarwal et al.
  2021) of variance ``sigma_m**2`` per coordinate, from a generator seeded by the
  operating system. With at least ``honest_floor`` honest survivors (the smallest
  survivor count the session accepts, minus the colluders), the honest noise in the
  sum has variance ``>= honest_floor * sigma_m**2 = (z * Delta)**2``.
* Accounting treats the honest noise as Gaussian of that variance, with sensitivity
  ``Delta + sqrt(d)``: ``effective_noise_multiplier``. For Skellam with variance
  ``>= 1e4`` per coordinate (what the 24-bit fields below give) Agarwal et al. show its
  Renyi DP approaches the Gaussian's; the approximation is documented, not hidden.

Headroom: a DDP grid packs 2 fields of 24 bits (not v3's 3 of 16) so that the noise
needs no value bits: values take ``k * level`` and the k members' noise
``tail * sqrt(k) * sigma_m``, together inside ``2**23``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from fedswarm.secagg.errors import ParameterSecurityError

DDP_FIELDS_PER_SLOT = 2
"""Fields per slot with group-level DP: 24-bit fields, so noise costs no value precision."""

NOISE_TAIL = 7.0
"""Standard deviations of the summed noise reserved in each field (and in the error
bound): a Gaussian exceeds 7 sigma with probability 2.6e-12 per coordinate. Exceeding it
only costs utility (one coordinate wraps; the bounds check refuses the round), never
privacy: noise is never clamped."""


@dataclass(frozen=True)
class GroupNoise:
    """The group-level DP settings every member of a group must share.

    noise_multiplier: z, the honest noise's std in units of one member's sensitivity.
    update_clip: L2 bound on the data-dependent part of a member's update (value units).
    min_survivors: the smallest survivor count a session may reveal a sum for (the
    session refuses a spec that accepts fewer).
    colluders: members who may pool what they know of their own noise.
    The noise is calibrated for ``honest_floor = min_survivors - colluders`` members.
    """

    noise_multiplier: float
    update_clip: float
    min_survivors: int
    colluders: int = 0

    @property
    def honest_floor(self) -> int:
        return self.min_survivors - self.colluders

    def __post_init__(self) -> None:
        if not 0 < self.noise_multiplier < float("inf"):
            raise ParameterSecurityError("group noise multiplier must be a finite number > 0")
        if not 0 < self.update_clip < float("inf"):
            raise ParameterSecurityError("group update clip must be a finite number > 0")
        if self.colluders < 0:
            raise ParameterSecurityError("colluders must be >= 0")
        if self.honest_floor < 1:
            raise ParameterSecurityError(
                f"group-level DP needs at least 1 honest survivor: {self.min_survivors} "
                f"survivors minus {self.colluders} colluders is below 1"
            )

    def describe(self) -> bytes:
        """What mask keys are bound to, so members with other settings cannot sum."""
        return (
            f"ddp z={self.noise_multiplier!r} clip={self.update_clip!r} "
            f"survivors={self.min_survivors} colluders={self.colluders}"
        ).encode()


@dataclass(frozen=True)
class NoisyLevels:
    """Per-member value level and noise std (grid units) for one group's field."""

    level: int
    member_std: float
    sensitivity: float  # Delta: one member's data moves its unrounded vector by <= this


def noisy_levels(noise: GroupNoise, field_room: int, k: int, ratio: float) -> NoisyLevels:
    """Split a field's room between k members' values and their summed noise.

    field_room: the largest |field sum| that cannot carry (2**(W-1) - 1 or the slot's
    share of p/2). ratio: update_clip / (value range the grid covers), so
    ``Delta = level * ratio``. The member noise std is ``z * Delta / sqrt(floor)``, and
    ``k * level + NOISE_TAIL * sqrt(k) * std <= field_room``.
    """
    z, floor = noise.noise_multiplier, noise.honest_floor
    per_level = k + NOISE_TAIL * math.sqrt(k) * z * ratio / math.sqrt(floor)
    level = int(field_room // per_level)
    if level < 1:
        raise ParameterSecurityError(
            f"group-level DP noise (z = {z}) does not fit a field for {k} members: "
            "lower group_noise_multiplier or the group size"
        )
    sensitivity = level * ratio
    return NoisyLevels(level, z * sensitivity / math.sqrt(floor), sensitivity)


def effective_noise_multiplier(noise_multiplier: float, sensitivity: float, n_values: int) -> float:
    """z as the accountant must see it: the honest noise over the rounded sensitivity.

    ``sensitivity`` (grid units) bounds the unrounded move; stochastic rounding adds at
    most ``sqrt(n_values)`` (module docstring).
    """
    if sensitivity <= 0 or n_values < 1:
        raise ParameterSecurityError("sensitivity and n_values must be positive")
    return noise_multiplier * sensitivity / (sensitivity + math.sqrt(n_values))


def skellam_noise(rng: np.random.Generator, size: int, std: float) -> np.ndarray:
    """Integer noise of variance std**2: Poisson(std**2 / 2) - Poisson(std**2 / 2).

    Symmetric, integer-valued and closed under summation (the sum of members' Skellam
    noise is Skellam), which is why Agarwal et al. use it inside secure aggregation.
    """
    mu = std * std / 2.0
    return rng.poisson(mu, size).astype(np.int64) - rng.poisson(mu, size).astype(np.int64)


def clip_update(vector: np.ndarray, anchor: np.ndarray, clip: float) -> tuple[np.ndarray, float]:
    """``anchor + delta * min(1, clip / |delta|)`` in float64, and |delta| before clipping.

    float64, not the vector's dtype: rounding the sum back to float32 would move the
    delta by up to an ulp of the anchor per coordinate, outside the clip.

    Why a delta: what a member sends (its adapter) is mostly its anchor, which the group
    already learned from earlier releases; only the delta depends on this round's data,
    so only the delta needs a bounded norm. The anchor must be a post-processing of
    earlier releases (docs/privacy.md), never the member's own unreleased training.
    """
    if vector.shape != anchor.shape:
        raise ValueError(f"vector {vector.shape} and anchor {anchor.shape} differ in shape")
    delta = vector.astype(np.float64) - anchor.astype(np.float64)
    norm = float(np.linalg.norm(delta))
    if norm > clip:
        delta *= clip / norm
    return anchor.astype(np.float64) + delta, norm
