"""The privacy budget: what DP-SGD steps have spent, and how many more fit.

The arithmetic is Opacus's RDP accountant (``opacus.accountants.RDPAccountant``), or its
PRV accountant (``PRVAccountant``, Gopi et al. 2021: numerically composed privacy loss
distributions, a tighter ε for the same history) with ``[privacy] accountant = "prv"``;
never ours: a hand-written accountant is the easiest place to get a privacy claim silently
wrong. This module only keeps the history the accountant needs (noise multiplier,
sample rate and step count of every stretch of training), checks a plan against the
target before training starts, and answers "how many of the next ``k`` steps still fit".

The history is the whole state. The daemon persists it (SQLite) *before* the steps it
describes are taken, so a crash can only over-count, never forget a spent step.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

from fedswarm.learning.errors import PrivacyConfigError
from fedswarm.learning.settings import PrivacySettings, TrainSettings


def _import_opacus() -> None:
    """Import Opacus without letting it configure the root logger.

    ``opacus.utils.module_utils`` calls ``logging.basicConfig`` at import: imported before
    the daemon sets up logging (``fedswarm config check`` / ``run`` check the budget
    first), it added a second, plain-text handler, and every log line came out twice,
    breaking JSON-only stderr. A handler on the root during the import makes that call a
    no-op.
    """
    root, guard = logging.getLogger(), logging.NullHandler()
    root.addHandler(guard)
    try:
        import opacus.accountants  # noqa: F401
    finally:
        root.removeHandler(guard)


_import_opacus()
from opacus.accountants import PRVAccountant, RDPAccountant  # noqa: E402
from opacus.accountants.utils import get_noise_multiplier  # noqa: E402


@dataclass(frozen=True)
class Spend:
    """``steps`` DP-SGD steps at one noise multiplier and Poisson sample rate."""

    noise_multiplier: float
    sample_rate: float
    steps: int


@dataclass(frozen=True)
class PrivacyPlan:
    """The DP-SGD parameters one trainer uses, fixed when it is built."""

    target_epsilon: float
    delta: float
    max_grad_norm: float
    noise_multiplier: float
    sample_rate: float  # expected logical batch / training examples (Poisson sampling)
    expected_batch_size: int
    examples: int
    accountant: str = "rdp"  # "rdp" or "prv" (epsilon_of)


ACCOUNTANTS = ("rdp", "prv")
ACCOUNTANT_NAMES = {"rdp": "Opacus RDP", "prv": "Opacus PRV"}


def epsilon_of(history: list[Spend], delta: float, accountant: str = "rdp") -> float:
    """ε spent by ``history`` at ``delta``, from Opacus's RDP or PRV accountant (0 when empty).

    PRV's ε is computed to within its default ``eps_error`` of 0.01, and reported as the
    upper end of that interval (what Opacus's ``get_epsilon`` returns).
    """
    steps = [(s.noise_multiplier, s.sample_rate, s.steps) for s in history if s.steps > 0]
    if not steps:
        return 0.0
    if accountant == "prv":
        prv = PRVAccountant()
        prv.history = steps
        with warnings.catch_warnings():
            # sample rate 1 (group-level DP) takes log(0) on a branch it then discards
            warnings.filterwarnings("ignore", category=RuntimeWarning)
            return float(prv.get_epsilon(delta))
    if accountant != "rdp":
        raise PrivacyConfigError(f"[privacy] accountant = {accountant!r}: use one of "
                                 f"{', '.join(ACCOUNTANTS)}")
    rdp = RDPAccountant()
    rdp.history = steps
    with warnings.catch_warnings():
        # "Optimal order is the largest alpha": at low noise the best Rényi order lies past
        # Opacus's default orders, so ε is looser than it could be but still an upper
        # bound. The defaults are kept so ε equals what any Opacus user computes.
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        return float(rdp.get_epsilon(delta))


def refuse_packed_text(data_format: str, packing: bool) -> None:
    """``PrivacyConfigError`` for packed text: a block mixes rows and a row spans blocks."""
    if data_format == "text" and packing:
        raise PrivacyConfigError(
            "[privacy] enabled: data.packing = true puts pieces of several rows in one "
            "block and one row in two, so clipping a block does not bound a row; set "
            "[data] packing = false (each row is one example)")


def make_plan(privacy: PrivacySettings, train: TrainSettings, examples: int) -> PrivacyPlan:
    """Check the settings against the data and fix σ, q and δ; ``PrivacyConfigError`` if not.

    Refused, each with one line naming the key: a logical batch larger than the data
    (Poisson sampling needs q ≤ 1), no ``noise_multiplier`` and no ``train.total_steps``
    to derive it from, and a budget that one round (``train.local_steps`` steps) would
    already exceed.
    """
    expected_batch = train.batch_size * train.grad_accum
    if expected_batch > examples:
        raise PrivacyConfigError(
            f"[privacy] enabled: train.batch_size × grad_accum = {expected_batch} is more than "
            f"the {examples} training examples; DP-SGD samples each example with probability "
            "batch/examples, which must be ≤ 1")
    sample_rate = expected_batch / examples
    delta = privacy.delta if privacy.delta is not None else 1.0 / examples
    sigma = privacy.noise_multiplier
    if sigma is None:
        if train.total_steps is None:
            raise PrivacyConfigError(
                "[privacy] noise_multiplier: unset, and [train] total_steps is unset too; set "
                "one so the noise can be chosen (derived: total_steps steps spend target_epsilon)")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            sigma = float(get_noise_multiplier(target_epsilon=privacy.target_epsilon,
                                               target_delta=delta, sample_rate=sample_rate,
                                               steps=train.total_steps,
                                               accountant=privacy.accountant))
    plan = PrivacyPlan(privacy.target_epsilon, delta, privacy.max_grad_norm, sigma, sample_rate,
                       expected_batch, examples, privacy.accountant)
    one_round = epsilon_of([Spend(sigma, sample_rate, train.local_steps)], delta,
                           privacy.accountant)
    if one_round > privacy.target_epsilon:
        raise PrivacyConfigError(
            f"[privacy] target_epsilon = {privacy.target_epsilon:g} cannot cover one round: "
            f"{train.local_steps} steps at noise_multiplier {sigma:.3g} and sample rate "
            f"{sample_rate:.3g} spend ε = {one_round:.3g} (δ = {delta:.3g}); raise "
            "noise_multiplier or target_epsilon, or lower train.local_steps")
    return plan


@dataclass
class PrivacyBudget:
    """The spend history of one trainer under one plan, and what is left of the target."""

    plan: PrivacyPlan
    history: list[Spend] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return sum(s.steps for s in self.history)

    def epsilon(self) -> float:
        return epsilon_of(self.history, self.plan.delta, self.plan.accountant)

    def remaining(self) -> float:
        return max(0.0, self.plan.target_epsilon - self.epsilon())

    def affordable_steps(self, wanted: int) -> int:
        """The most of the next ``wanted`` steps that keep ε ≤ target (binary search)."""
        def fits(k: int) -> bool:
            step = Spend(self.plan.noise_multiplier, self.plan.sample_rate, k)
            spent = epsilon_of([*self.history, step], self.plan.delta, self.plan.accountant)
            return spent <= self.plan.target_epsilon

        low, high = 0, wanted
        while low < high:
            mid = (low + high + 1) // 2
            if fits(mid):
                low = mid
            else:
                high = mid - 1
        return low

    def spend(self, steps: int) -> Spend:
        """Record ``steps`` steps at this plan's σ and q."""
        return self.record(Spend(self.plan.noise_multiplier, self.plan.sample_rate, steps))

    def record(self, entry: Spend) -> Spend:
        """Add ``entry`` to the history, merged into the last stretch when σ and q match
        (one accountant term per stretch, not per round, however long the daemon runs)."""
        last = self.history[-1] if self.history else None
        if last is not None and (last.noise_multiplier, last.sample_rate) == \
                (entry.noise_multiplier, entry.sample_rate):
            self.history[-1] = Spend(last.noise_multiplier, last.sample_rate,
                                     last.steps + entry.steps)
        else:
            self.history.append(entry)
        return entry
