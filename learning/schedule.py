"""Learning-rate schedule as one pure function of the global step.

A pure function (rather than a torch scheduler object) keeps resume trivial: the only
state is the step counter the trainer already checkpoints.
"""

from __future__ import annotations

import math

from fedswarm.learning.settings import TrainSettings


def learning_rate(step: int, settings: TrainSettings) -> float:
    """The rate for optimiser step ``step`` (0-based), counted across all rounds."""
    if settings.warmup_steps and step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    if settings.schedule == "constant" or settings.total_steps is None:
        return settings.lr
    decay_steps = max(1, settings.total_steps - settings.warmup_steps)
    progress = min(1.0, (step - settings.warmup_steps) / decay_steps)
    if settings.schedule == "linear":
        return settings.lr * (1.0 - progress)
    return settings.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
