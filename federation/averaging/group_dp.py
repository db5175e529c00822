"""Group-level DP for a member's averaged vector: the anchor, the clip, the parameters.

Why a separate piece: the secure aggregation protocol adds the noise (secagg's
``distributed_dp``), but only the mode knows which part of what a member sends depends
on this round's data. That part is the change since the member's *anchor*: the last
vector it took from a group result (or its starting vector), which is a post-processing
of earlier noisy releases. A member's own training after that (rounds it trained alone,
rounds whose result it refused) stays inside the change, so it is clipped and noised
the next time the member averages; the anchor never carries it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from fedswarm.learning.settings import PrivacySettings
from fedswarm.secagg.distributed_dp import GroupNoise, clip_update, effective_noise_multiplier
from fedswarm.secagg.params import SecAggParams, params_for_protocol
from fedswarm.secagg.quantise import QuantisationGrid

from ..round import MIN_GROUP_SIZE


def group_noise(privacy: PrivacySettings) -> GroupNoise | None:
    """The protocol's noise settings from ``[privacy]``; None without group-level DP.

    Calibrated for the smallest sum a session may reveal (``MIN_GROUP_SIZE`` survivors)
    minus the configured colluders.
    """
    if privacy.group_noise_multiplier is None:
        return None
    return GroupNoise(
        privacy.group_noise_multiplier, privacy.group_update_clip, MIN_GROUP_SIZE, privacy.colluders
    )


def group_dp_params(protocol: str, noise: GroupNoise) -> SecAggParams:
    """The protocol's parameters with the noise (2 fields of 24 bits per slot)."""
    params = params_for_protocol(protocol).with_group_noise(noise)
    params.validate()
    return params


@dataclass
class Anchor:
    """The last released vector this member holds, and the clip of its change."""

    noise: GroupNoise
    vector: np.ndarray | None = None
    last_change_norm: float | None = field(default=None)

    def clip(self, vector: np.ndarray) -> np.ndarray:
        """What to send: anchor + the change clipped to the update clip (float64)."""
        if self.vector is None or self.vector.shape != vector.shape:
            # the first round (or a new layout): the starting vector is the anchor, so
            # nothing of this round's data may pass; the trainer's start is public
            # (seeded initialisation) or an earlier release
            raise AnchorMissingError(
                "group-level DP: no anchor for this vector; call Anchor.reset with the "
                "vector this member started the round from before training"
            )
        sent, norm = clip_update(vector, self.vector, self.noise.update_clip)
        self.last_change_norm = norm
        return sent

    def reset(self, released: np.ndarray) -> None:
        """Take a released vector (a group result applied, a start) as the new anchor."""
        self.vector = np.array(released, dtype=np.float64, copy=True)


class AnchorMissingError(RuntimeError):
    """Group-level DP was asked to clip a change without an anchor to measure it from."""


def planned_noise_multiplier(params: SecAggParams, largest_group: int, n_values: int) -> float:
    """The effective z to account *before* a round, whatever its group turns out to be.

    The sensitivity on the grid shrinks as the group grows (each member gets less of a
    field), and rounding adds a fixed sqrt(n_values), so the largest planned group is
    the worst case; the range shift is 0 with group-level DP and the weight class does
    not change the level.
    """
    noise = params.group_noise
    if noise is None:
        raise ValueError("parameters without group-level DP")
    grid = QuantisationGrid.for_group(params, largest_group)
    return effective_noise_multiplier(noise.noise_multiplier, grid.sensitivity, n_values)
