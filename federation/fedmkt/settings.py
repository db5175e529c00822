"""The ``[fedmkt]`` table of the daemon's config: FedMKT mode's settings.

``learning.fedmkt.FedMKTSettings`` holds the algorithm's knobs; the daemon also needs
how long to distil each round and the file the federation agreed on. This wrapper
keeps every field a plain TOML type (so ``config_schema`` can name the key on every
error) and builds the learning layer's settings from it.

The public set must be byte-for-byte the same texts on every peer: knowledge is
exchanged per example index, so two peers with different files would align
unrelated sentences. ``public_sha256`` is the federation's agreement; a peer whose
file hashes differently is refused at start (exit 2), before it teaches anyone
garbage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fedswarm.learning.fedmkt import FedMKTError, FedMKTSettings

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: Bounds the securely averaged vector: rows x (support_size + 2) values.
MAX_SUPPORT_SIZE = 1024


@dataclass
class FedMKTSection:
    """``[fedmkt]``: mutual knowledge transfer settings (used when federation.mode = "fedmkt")."""

    public_path: str = ""
    public_sha256: str = ""
    top_k: int = 32
    alpha: float = 0.9
    temperature: float = 1.0
    selection: Literal["min_ce", "weighted", "token_min_ce"] = "min_ce"
    ce_temperature: float = 1.0
    distill_loss: Literal["soft_ce", "kl"] = "soft_ce"
    max_length: int = 128
    knowledge_batch_size: int = 8
    distill_steps: int = 10
    distill_batch_size: int = 8
    distill_lr: float = 1e-3
    #: Groups whose members share one tokenizer average their public-set distributions
    #: under secure aggregation ("secure") instead of sending top-k in the clear.
    homogeneous_exchange: Literal["secure", "clear"] = "secure"
    #: Frequent public-set tokens per row of the securely averaged vector (docs/fedmkt.md).
    support_size: int = 30
    #: Share of each distillation batch that is the member's own training data under the
    #: plain LM loss (own-data replay): what keeps distillation from undoing local
    #: training at home (docs/fedmkt.md lever table). 0 turns it off.
    replay_fraction: float = 0.75

    def __post_init__(self) -> None:
        if self.public_sha256:
            self.public_sha256 = self.public_sha256.strip().lower()
            if not _SHA256.match(self.public_sha256):
                raise ValueError("public_sha256: expected 64 hexadecimal characters")
        if self.distill_steps < 0:
            raise ValueError("distill_steps: must be >= 0")
        if self.distill_batch_size < 1:
            raise ValueError("distill_batch_size: must be >= 1")
        if self.distill_lr <= 0:
            raise ValueError("distill_lr: must be positive")
        if self.homogeneous_exchange not in ("secure", "clear"):
            raise ValueError("homogeneous_exchange: must be 'secure' or 'clear'")
        if not 1 <= self.support_size <= MAX_SUPPORT_SIZE:
            raise ValueError(f"support_size: must be in 1..{MAX_SUPPORT_SIZE}")
        try:
            self.settings()
        except FedMKTError as exc:  # config_schema reports ValueError with the table name
            raise ValueError(str(exc)) from None

    def settings(self) -> FedMKTSettings:
        """The learning layer's settings for this table."""
        return FedMKTSettings(
            top_k=self.top_k,
            alpha=self.alpha,
            temperature=self.temperature,
            selection=self.selection,
            ce_temperature=self.ce_temperature,
            distill_loss=self.distill_loss,
            public_path=Path(self.public_path) if self.public_path else None,
            public_sha256=self.public_sha256 or None,
            max_length=self.max_length,
            knowledge_batch_size=self.knowledge_batch_size,
            replay_fraction=self.replay_fraction,
        )

