"""What a FedKSeed member knows: K accumulated scalars, and Pro's amplitude history.

``scalars[j]`` is the signed distance travelled along z_j since the base model (the
learning rate and the descent's minus sign included), so the model is
``w0 + sum_j scalars[j] z_j`` (``replay``). That vector is the whole model state:
it is what a group averages (averaging the scalars is exactly averaging the models,
since the model is linear in them), what catch-up hands over and what a checkpoint keeps.

Pro's statistics are the mean clipped |g| seen per seed and how many values that mean
covers; members average the means (not the counts, which stay local) so that seeds
that moved the loss for the group are drawn more often everywhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .errors import KVectorError


@dataclass
class KSeedState:
    """K scalars and Pro's per-seed mean |g| and its count (all length K)."""

    scalars: np.ndarray
    amplitudes: np.ndarray
    counts: np.ndarray

    @classmethod
    def zeros(cls, k: int) -> KSeedState:
        return cls(np.zeros(k, np.float32), np.zeros(k, np.float32), np.zeros(k, np.int64))

    @property
    def k(self) -> int:
        return int(self.scalars.shape[0])

    def copy(self) -> KSeedState:
        return KSeedState(self.scalars.copy(), self.amplitudes.copy(), self.counts.copy())

    def step(self, j: int, delta: float, amplitude: float) -> None:
        """Record one step along seed j: its scalar change and the clipped |g| seen."""
        self.scalars[j] = np.float32(self.scalars[j] + np.float32(delta))
        n = self.counts[j]
        self.amplitudes[j] = np.float32((self.amplitudes[j] * n + amplitude) / (n + 1))
        self.counts[j] = n + 1

    def seeds_used(self) -> int:
        """Seeds with a non-zero scalar: the replay's cost in passes over the weights."""
        return int(np.count_nonzero(self.scalars))

    def fingerprint(self) -> str:
        """A short hash of the scalars: the model, given the base and the pool."""
        h = hashlib.sha256(b"fedswarm/fedkseed/k-vector/v1")
        h.update(np.ascontiguousarray(self.scalars, dtype="<f4").tobytes())
        return h.hexdigest()[:16]


def check_vector(vector: np.ndarray, size: int, bound: float, what: str) -> np.ndarray:
    """``vector`` as float32 if it has ``size`` finite values within ``bound``;
    ``KVectorError`` otherwise (nothing is applied from a bad vector)."""
    flat = np.asarray(vector)
    if flat.ndim != 1 or flat.shape[0] != size:
        raise KVectorError(f"{what}: {flat.shape} values, expected ({size},)")
    flat = flat.astype(np.float32, copy=False)
    if not np.isfinite(flat).all():
        raise KVectorError(f"{what}: contains NaN or infinity")
    largest = float(np.max(np.abs(flat))) if size else 0.0
    if largest > bound:
        raise KVectorError(f"{what}: |value| {largest:.6g} above the bound {bound:.6g}")
    return flat
