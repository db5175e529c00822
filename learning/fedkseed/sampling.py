"""Which seed a step explores: uniform, or FedKSeed-Pro's sampling by past |g|.

Pro (Qin et al., as FATE-LLM's ``probability_from_amps``): each seed's mean clipped
|g| is min-max normalised to [0, 1] and the probabilities are its softmax, so a seed
that moved the loss a lot is drawn up to e times as often as one that did not.
Before any amplitude is known (all equal) this is uniform.
"""

from __future__ import annotations

import numpy as np


def seed_probabilities(amplitudes: np.ndarray, pro: bool) -> np.ndarray:
    """Probability of drawing each seed (float64, sums to 1)."""
    k = int(amplitudes.shape[0])
    if not pro:
        return np.full(k, 1.0 / k)
    amp = np.asarray(amplitudes, dtype=np.float64)
    spread = float(amp.max() - amp.min())
    scaled = (amp - amp.min()) / (spread + 1e-10)
    weights = np.exp(scaled - scaled.max())
    return weights / weights.sum()
