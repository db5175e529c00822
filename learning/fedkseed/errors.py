"""Errors FedKSeed raises on purpose: each names one cause in one line."""

from __future__ import annotations

from fedswarm.learning.errors import LearningError


class KSeedError(LearningError):
    """Base class for FedKSeed's errors."""


class BaseModelMismatchError(KSeedError):
    """The base model's weights hash differently from ``[fedkseed] base_model_sha256``."""


class KVectorError(KSeedError):
    """A K-vector (from a peer, a checkpoint or a group) is malformed or out of bounds."""
