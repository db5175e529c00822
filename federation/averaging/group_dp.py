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

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from fedswarm.learning.settings import PrivacySettings
from fedswarm.secagg.distributed_dp import GroupNoise, clip_update, effective_noise_multiplier
from fedswarm.secagg.params import SecAggParams, params_for_protocol
from fedswarm.secagg.quantise import QuantisationGrid

from ..round import MIN_GROUP_SIZE

if TYPE_CHECKING:  # the budget imports Opacus (and torch): reading a config must not
    from fedswarm.learning.group_privacy import GroupBudget


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


@dataclass
class GroupPrivacy:
    """A member's group-level DP: its anchor, its budget, and the release it is about to make.

    ``on_release(z)`` persists a release before it is made (the daemon writes it to its
    state), so a crash can over-count but never forget one. ``anchor_file``, when set,
    keeps the anchor across restarts: without it a restarted member would take its own
    unreleased training (rounds it trained alone) as released.
    """

    params: SecAggParams
    budget: GroupBudget
    largest_group: int
    on_release: Callable[[float], None] = lambda z: None
    anchor_file: Path | None = None
    anchor: Anchor = field(init=False)

    def __post_init__(self) -> None:
        assert self.params.group_noise is not None
        self.anchor = Anchor(self.params.group_noise)
        if self.anchor_file is not None and self.anchor_file.exists():
            self.anchor.vector = np.load(self.anchor_file, allow_pickle=False)

    def start(self, vector: np.ndarray) -> None:
        """Before the first training: the member's starting vector is its anchor (a
        seeded initialisation or an earlier release), unless one was kept."""
        if self.anchor.vector is None or self.anchor.vector.shape != vector.shape:
            self.released(vector)

    def prepare(self, vector: np.ndarray) -> tuple[np.ndarray, float]:
        """(what to send, the z accounted for it); ``GroupBudgetSpentError`` when no
        release fits the target any more. The release is recorded before returning."""
        z = planned_noise_multiplier(self.params, self.largest_group, vector.size)
        if not self.budget.fits(z):
            raise GroupBudgetSpentError(
                f"group-level privacy budget spent: ε = {self.budget.epsilon():.3f} of "
                f"{self.budget.target_epsilon:g}; this member no longer averages"
            )
        sent = self.anchor.clip(vector)
        self.on_release(z)
        self.budget.record(z)
        return sent, z

    def released(self, vector: np.ndarray) -> None:
        """A group result (or a start): the anchor the next change is measured from."""
        self.anchor.reset(vector)
        if self.anchor_file is not None:
            tmp = self.anchor_file.with_name(self.anchor_file.name + ".tmp.npy")
            np.save(tmp, np.asarray(self.anchor.vector), allow_pickle=False)
            tmp.replace(self.anchor_file)


class GroupBudgetSpentError(RuntimeError):
    """One more group-level release would exceed ``[privacy] group_target_epsilon``."""
