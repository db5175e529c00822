"""Torch-free stand-ins for the offsite trainer and owner model: the mode only needs vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fedswarm.learning.trainer import TrainReport

SIZE = 32


class FakeTrainer:
    """Adapter layers as a vector; ``train`` adds this member's own fixed step."""

    def __init__(self, step: float) -> None:
        self.initial_vector = np.linspace(-1.0, 1.0, SIZE, dtype=np.float32) * 3.0
        self.vector = self.initial_vector.copy()
        self.step = step

    def train(self) -> TrainReport:
        self.vector = self.vector + np.float32(self.step)
        return TrainReport(steps=1, loss=1.0, tokens=1, seconds=0.0)

    def adapter_vector(self) -> np.ndarray:
        return self.vector.copy()

    def load_adapter_vector(self, vector: np.ndarray) -> None:
        self.vector = np.asarray(vector, np.float32).copy()


class FakeOwnerModel:
    """The owner's full model, reduced to "which adapter vector is plugged in"."""

    def __init__(self) -> None:
        self.initial_vector = np.linspace(-1.0, 1.0, SIZE, dtype=np.float32) * 3.0
        self.plugged = self.initial_vector.copy()
        self.exports: list[Path] = []

    def plug_in_vector(self, vector: np.ndarray) -> None:
        self.plugged = np.asarray(vector, np.float32).copy()

    def export(self, out_dir: Path) -> None:
        self.exports.append(out_dir)
