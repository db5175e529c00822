"""``[fedkseed]``: the knobs of zeroth-order full-parameter tuning along K shared seeds.

A plain dataclass without torch, so that reading a config stays fast
(``tests/daemon/test_config_check_refuses_what_run_would.py``). Every member of a
federation must use the same ``k``, ``lr``, ``grad_clip``, ``max_steps_per_seed``,
``trainable`` and base model: they define what one accumulated scalar means. ``eps``,
``steps_per_round`` and ``pro`` only change how a member explores, not what it sends.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

Trainable = Literal["all", "no_embeddings"]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: A pool larger than this makes the exchanged vector bigger than one BFV ciphertext's
#: 4096 slots twice over (with Pro's statistics) for no measured gain.
MAX_K = 65536


@dataclass
class KSeedSettings:
    """FedKSeed's settings (Qin et al., ICML 2024).

    Defaults: ``k = 1024`` and ``eps = 5e-4`` as the paper's scripts and FATE-LLM
    (FATE's default pool is 4096; 1024 keeps a member's plain upload under 10 KB with
    Pro's statistics). ``lr`` is the paper's 3e-7 for billion-parameter models: a small
    model needs a larger one (the demo uses 2e-5).

    ``grad_clip`` bounds each projected gradient g (and the amplitudes Pro samples by),
    so a member's accumulated scalar along one seed is at most ``lr * grad_clip`` per
    step; ``max_steps_per_seed`` says how many such full steps the exchanged vector can
    carry per seed (it is sent divided by ``lr * grad_clip * max_steps_per_seed``, which
    secure aggregation's clip bounds to [-1, 1]). ``base_model_sha256`` pins the base
    weights: the seed pool derives from it and the federation id, and a member whose
    base hashes differently is refused at start.
    """

    k: int = 1024
    eps: float = 5e-4
    lr: float = 3e-7
    steps_per_round: int = 50
    pro: bool = True
    grad_clip: float = 10.0
    max_steps_per_seed: float = 32.0
    trainable: Trainable = "all"
    base_model_sha256: str = ""

    def __post_init__(self) -> None:
        if not 2 <= self.k <= MAX_K:
            raise ValueError(f"k: must be in 2..{MAX_K}")
        for name in ("eps", "lr", "grad_clip", "max_steps_per_seed"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: must be a positive finite number")
        if self.steps_per_round < 1:
            raise ValueError("steps_per_round: must be >= 1")
        if self.trainable not in ("all", "no_embeddings"):
            raise ValueError("trainable: must be 'all' or 'no_embeddings'")
        if self.base_model_sha256:
            self.base_model_sha256 = self.base_model_sha256.strip().lower()
            if not _SHA256.match(self.base_model_sha256):
                raise ValueError("base_model_sha256: expected 64 hexadecimal characters")

    @property
    def scalar_bound(self) -> float:
        """The largest |accumulated scalar| a member can send without clipping."""
        return self.lr * self.grad_clip * self.max_steps_per_seed

    @property
    def vector_size(self) -> int:
        """Values a member sends its group: K scalars, and K amplitudes with Pro."""
        return self.k * (2 if self.pro else 1)
