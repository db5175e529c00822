"""The group-level DP budget: one Gaussian-mechanism release per round this member averaged.

Why sample rate 1 and one step per round: each round a member's whole clipped change
enters its group's sum once (no sampling), with honest noise of ``z_eff`` times its
sensitivity (``secagg.distributed_dp.effective_noise_multiplier``). Opacus's RDP or PRV
accountant composes those releases, as for DP-SGD with q = 1; treating the summed
Skellam noise as Gaussian of the same variance is the approximation documented in
docs/privacy.md. No privacy arithmetic is ours.

The history is persisted by the daemon before the round's upload, like the
record-level budget (``learning/privacy.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedswarm.learning.privacy import Spend, epsilon_of

GROUP_SAMPLE_RATE = 1.0


@dataclass
class GroupBudget:
    """Rounds released at their effective noise multipliers, and what is left."""

    delta: float
    target_epsilon: float | None = None  # None: accounted and shown, never enforced
    accountant: str = "rdp"
    history: list[Spend] = field(default_factory=list)

    @property
    def rounds(self) -> int:
        return sum(s.steps for s in self.history)

    def epsilon(self) -> float:
        return epsilon_of(self.history, self.delta, self.accountant)

    def remaining(self) -> float | None:
        if self.target_epsilon is None:
            return None
        return max(0.0, self.target_epsilon - self.epsilon())

    def fits(self, noise_multiplier: float) -> bool:
        """Whether one more release at ``noise_multiplier`` keeps ε within the target."""
        if self.target_epsilon is None:
            return True
        after = [*self.history, Spend(noise_multiplier, GROUP_SAMPLE_RATE, 1)]
        return epsilon_of(after, self.delta, self.accountant) <= self.target_epsilon

    def record(self, noise_multiplier: float) -> Spend:
        """Add one release, merged into the last stretch at the same multiplier."""
        last = self.history[-1] if self.history else None
        if last is not None and last.noise_multiplier == noise_multiplier:
            self.history[-1] = Spend(noise_multiplier, GROUP_SAMPLE_RATE, last.steps + 1)
        else:
            self.history.append(Spend(noise_multiplier, GROUP_SAMPLE_RATE, 1))
        return self.history[-1]
