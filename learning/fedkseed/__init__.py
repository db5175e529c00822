"""FedKSeed: zeroth-order full-parameter tuning along a pool of K shared seeds.

Qin et al., ICML 2024 (FATE-LLM's ``fedkseed``). Each step draws seed j, measures the
loss's slope g along direction z_j with two forward passes and moves the weights by
``-lr g z_j``; because the pool is finite, the whole model is the base plus
``sum_j A_j z_j``, and a member's state is K scalars (``state.KSeedState``). One
concept per module: ``settings`` (the ``[fedkseed]`` table), ``seed_pool``,
``perturbation`` (device-independent directions), ``parameters`` (the tuned set and
its hashes), ``replay`` (the canonical model of a K-vector), ``zeroth_order`` (one
step), ``sampling`` (FedKSeed-Pro), ``trainer`` (the member's trainer). See
docs/fedkseed.md.

The torch-backed names are imported on first use: the daemon's config reads
``settings`` without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedswarm.learning.lazy_exports import import_lazily

from .errors import BaseModelMismatchError, KSeedError, KVectorError
from .settings import KSeedSettings

if TYPE_CHECKING:
    from .trainer import KSeedTrainer

__all__ = ["BaseModelMismatchError", "KSeedError", "KSeedSettings", "KSeedTrainer", "KVectorError"]

_LAZY = {"KSeedTrainer": "trainer"}


def __getattr__(name: str) -> Any:
    return import_lazily(__name__, _LAZY, globals(), name)
