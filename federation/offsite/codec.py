"""What an offsite group averages: each member's adapter-layer change since the package.

Members send ``current - initial`` (the package's adapter layers), not the weights
themselves: whole-layer weights (norm scales near 1, projections of any size) would be
clipped by the averaging's per-coordinate bound (``SecAggParams.clip_norm``), while the
change a few rounds of fine-tuning make stays well inside it. Since the change is
cumulative, the newest group average holds everything before it: an owner that missed
rounds loses nothing by plugging in the next one it receives.
"""

from __future__ import annotations

import numpy as np


class OffsiteVectorError(ValueError):
    """A vector that does not fit this package's adapter layers."""


def member_delta(current: np.ndarray, initial: np.ndarray) -> np.ndarray:
    """What a member sends: its adapter layers' change since the package."""
    if current.shape != initial.shape:
        raise OffsiteVectorError(
            f"adapter vector has {current.size} values, the package's adapter layers {initial.size}"
        )
    return (np.asarray(current, np.float32) - np.asarray(initial, np.float32)).astype(np.float32)


def apply_delta(initial: np.ndarray, average: np.ndarray) -> np.ndarray:
    """The adapter layers after a group's averaged change."""
    if average.shape != initial.shape:
        raise OffsiteVectorError(
            f"group average has {average.size} values, the package's adapter layers {initial.size}"
        )
    if not np.all(np.isfinite(average)):
        raise OffsiteVectorError("group average holds non-finite values")
    return (np.asarray(initial, np.float32) + np.asarray(average, np.float32)).astype(np.float32)


def encode_average(average: np.ndarray) -> bytes:
    """The average a member hands the owner: little-endian float32, nothing else."""
    return np.asarray(average, dtype="<f4").tobytes()


def decode_average(payload: bytes, expected_size: int) -> np.ndarray:
    if len(payload) != 4 * expected_size:
        raise OffsiteVectorError(f"average of {len(payload)} bytes, expected {4 * expected_size}")
    return np.frombuffer(payload, dtype="<f4").astype(np.float32)
