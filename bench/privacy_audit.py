"""The audit's measures: canaries, their exposure, and loss-threshold membership inference.

Pure functions of losses (numpy and scipy only), so they are tested without a model.

* Exposure (Carlini et al., "The Secret Sharer", USENIX Security 2019): a canary's secret
  is drawn uniformly from a space of size |R|; exposure = log2 |R| − log2 rank, where rank
  is the secret's place among all candidates ordered by the model's loss. Enumerating
  |R| = 10^6 candidates is too slow here, so two estimates from M sampled candidates are
  reported: ``rank`` (the sampled fraction scaled to |R|; at most log2 |R|, and only
  log2 M bits are really resolved) and ``fit`` (Carlini's extrapolation: a normal fitted
  to the candidates' losses, exposure = −log2 Φ(z) of the secret's loss).
* Membership inference (Yeom et al., CSF 2018): score each example by minus its loss;
  the AUC of members (training rows) against non-members (held-out rows of the same
  domain). 0.5 is chance.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

SECRET_DIGITS = 6


@dataclass(frozen=True)
class Canary:
    """A sentence with a random secret; ``text(secret)`` renders any candidate."""

    name: str
    secret: str

    def text(self, secret: str | None = None) -> str:
        digits = " ".join(secret if secret is not None else self.secret)
        return f"The secret code of {self.name} is {digits} ."


def make_canaries(count: int, seed: int) -> list[Canary]:
    """``count`` canaries with distinct names and uniformly random 6-digit secrets."""
    rng = random.Random(seed)
    names = ["Ilse Vantongeren", "Marek Oyelaran", "Tuula Brannigan", "Osei Lindqvist",
             "Priya Halvorsen", "Dario Nakashima", "Femke Adeyemi", "Yusuf Carvalho"]
    if count > len(names):
        raise ValueError(f"at most {len(names)} canaries")
    return [Canary(names[i], "".join(rng.choice("0123456789") for _ in range(SECRET_DIGITS)))
            for i in range(count)]


def candidate_secrets(canary: Canary, count: int, seed: int) -> list[str]:
    """``count`` random secrets other than the canary's own (the reference population)."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < count:
        guess = "".join(rng.choice("0123456789") for _ in range(SECRET_DIGITS))
        if guess != canary.secret:
            out.append(guess)
    return out


def exposure_by_rank(secret_loss: float, candidate_losses: np.ndarray, space: int) -> float:
    """log2 |R| − log2 (estimated rank); the rank is 1 + |R| × the fraction below."""
    below = float(np.mean(candidate_losses < secret_loss))
    rank = 1.0 + below * (space - 1)
    return math.log2(space) - math.log2(rank)


def exposure_by_fit(secret_loss: float, candidate_losses: np.ndarray) -> float:
    """−log2 Φ(z): the chance a random candidate scores below the secret, from a normal fit."""
    mu, sigma = float(np.mean(candidate_losses)), float(np.std(candidate_losses))
    if sigma == 0.0:
        return 0.0
    return float(-norm.logcdf((secret_loss - mu) / sigma) / math.log(2))


def membership_auc(member_losses: np.ndarray, nonmember_losses: np.ndarray) -> float:
    """AUC of the loss-threshold attack (lower loss → member); ties count one half."""
    members = np.asarray(member_losses)[:, None]
    others = np.asarray(nonmember_losses)[None, :]
    return float(np.mean((members < others) + 0.5 * (members == others)))
