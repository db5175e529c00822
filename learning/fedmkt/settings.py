"""Configuration of FedMKT, as one dataclass the daemon can fill from its config file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fedswarm.learning.fedmkt.errors import FedMKTError

Selection = Literal["min_ce", "weighted", "token_min_ce"]
DistillLoss = Literal["soft_ce", "kl"]


@dataclass(frozen=True)
class FedMKTSettings:
    """Knobs of mutual knowledge transfer.

    ``top_k`` bounds what a peer sends per position (ids + logits), which bounds both the
    bandwidth and what a peer reveals. ``alpha`` weighs the plain LM loss on the public
    set against the distillation loss: ``alpha * lm + (1 - alpha) * distill``.
    ``selection`` picks, per public example, either the single distribution (own or a
    peer's) with the lowest mean cross-entropy (``"min_ce"``), or mixes all of them with
    weights ``softmax(-ce / ce_temperature)`` (``"weighted"``), or, per prediction row,
    takes the source that gives the gold token the highest probability, a peer only where
    it is aligned 1:1 (``"token_min_ce"``: distil only where a teacher beats us).
    ``replay_fraction`` of every distillation batch is the member's own private text with
    the plain LM loss (own-data replay, so the own domain is not forgotten).
    """

    top_k: int = 32
    alpha: float = 0.9
    temperature: float = 1.0
    selection: Selection = "min_ce"
    ce_temperature: float = 1.0
    distill_loss: DistillLoss = "soft_ce"
    public_path: Path | None = None
    public_sha256: str | None = None
    max_length: int = 128
    knowledge_batch_size: int = 8
    replay_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise FedMKTError(f"top_k must be >= 1, got {self.top_k}")
        if not 0.0 <= self.alpha <= 1.0:
            raise FedMKTError(f"alpha must lie in [0, 1], got {self.alpha}")
        if self.temperature <= 0.0:
            raise FedMKTError(f"temperature must be > 0, got {self.temperature}")
        if self.ce_temperature <= 0.0:
            raise FedMKTError(f"ce_temperature must be > 0, got {self.ce_temperature}")
        if self.selection not in ("min_ce", "weighted", "token_min_ce"):
            raise FedMKTError(
                "selection must be 'min_ce', 'weighted' or 'token_min_ce', "
                f"got {self.selection!r}"
            )
        if not 0.0 <= self.replay_fraction < 1.0:
            raise FedMKTError(f"replay_fraction must lie in [0, 1), got {self.replay_fraction}")
        if self.distill_loss not in ("soft_ce", "kl"):
            raise FedMKTError(f"distill_loss must be 'soft_ce' or 'kl', got {self.distill_loss!r}")
        if self.max_length < 2:
            raise FedMKTError(f"max_length must be >= 2, got {self.max_length}")
        if self.knowledge_batch_size < 1:
            raise FedMKTError("knowledge_batch_size must be >= 1")
