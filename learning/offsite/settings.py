"""Settings for building an offsite package (no torch: the CLI and config check read them)."""

from __future__ import annotations

from dataclasses import dataclass

from fedswarm.learning.errors import OffsiteError


@dataclass(frozen=True)
class DistillSettings:
    """How long and how hard to distil; ``steps = 0`` publishes the plain sub-sampled middle."""

    steps: int = 0
    lr: float = 1e-3
    batch_size: int = 8
    seq_len: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.seq_len < 2 or not self.lr > 0:
            raise OffsiteError(
                "distillation: steps >= 0, batch_size >= 1, seq_len >= 2 and lr > 0 are required"
            )
