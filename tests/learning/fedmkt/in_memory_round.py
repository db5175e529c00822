"""An in-memory FedMKT round between participants of the toy world (tests, bench/fedmkt.py).

The daemon runs the real exchange between processes; this drives the same library
steps (local training, public knowledge, encode/decode and validation, distillation)
for a list of models in one process, so tests and the benchmark measure what a round
does without any networking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from fedswarm.learning.fedmkt.knowledge import PublicKnowledge, compute_public_knowledge
from fedswarm.learning.fedmkt.public_data import PublicDataset
from fedswarm.learning.fedmkt.settings import FedMKTSettings
from fedswarm.learning.fedmkt.trainer import (
    DistillStats,
    accept_peer_knowledge,
    distill,
    train_causal_lm,
)
from fedswarm.learning.fedmkt.vocab_mapping import VocabMappingCache


@dataclass
class Participant:
    """One peer of an in-memory FedMKT round (tests and benchmarks)."""

    name: str
    model: torch.nn.Module
    tokenizer: Any
    private_texts: Sequence[str]
    seed: int = 0
    #: This member's own settings for its distillation (e.g. its replay_fraction); the
    #: round's settings when None. Knowledge (top_k, max_length) always uses the round's.
    settings: FedMKTSettings | None = None
    #: This member's own split of a round's steps (local training, distillation); the
    #: round's when None. A member chooses its own ``[fedmkt] distill_steps``.
    local_steps: int | None = None
    distill_steps: int | None = None


@dataclass
class RoundReport:
    """What one in-memory mutual round did, per participant name."""

    local_losses: dict[str, list[float]] = field(default_factory=dict)
    distill: dict[str, DistillStats] = field(default_factory=dict)
    bytes_sent: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, dict[str, str]] = field(default_factory=dict)


def mutual_round(
    participants: Sequence[Participant],
    public: PublicDataset,
    settings: FedMKTSettings,
    local_steps: int,
    distill_steps: int,
    batch_size: int = 8,
    learning_rate: float = 1e-3,
    mapping_cache_dir: Path | None = None,
    round_number: int = 0,
) -> RoundReport:
    """Local training → knowledge on the public set → exchange (bytes) → distillation.

    The exchange goes through :meth:`PublicKnowledge.encode`/``decode`` and validation,
    exactly as received blobs would, so what is measured and tested is the wire path.
    """
    report = RoundReport()
    cache = VocabMappingCache(mapping_cache_dir) if mapping_cache_dir is not None else None
    blobs: dict[str, bytes] = {}
    own_knowledge: dict[str, PublicKnowledge] = {}
    for peer in participants:
        report.local_losses[peer.name] = train_causal_lm(
            peer.model,
            peer.tokenizer,
            peer.private_texts,
            local_steps if peer.local_steps is None else peer.local_steps,
            batch_size=batch_size,
            learning_rate=learning_rate,
            max_length=settings.max_length,
            seed=peer.seed + 1000 * round_number,
        )
        knowledge = compute_public_knowledge(
            peer.model,
            peer.tokenizer,
            public.texts,
            public.sha256,
            top_k=settings.top_k,
            max_length=settings.max_length,
            batch_size=settings.knowledge_batch_size,
        )
        own_knowledge[peer.name] = knowledge
        blobs[peer.name] = knowledge.encode()
        report.bytes_sent[peer.name] = len(blobs[peer.name]) * (len(participants) - 1)
    for peer in participants:
        received = {name: blob for name, blob in blobs.items() if name != peer.name}
        accepted, rejected = accept_peer_knowledge(received, public)
        report.rejected[peer.name] = rejected
        report.distill[peer.name] = distill(
            peer.model,
            peer.tokenizer,
            own_knowledge[peer.name],
            accepted,
            peer.settings or settings,
            distill_steps if peer.distill_steps is None else peer.distill_steps,
            batch_size=batch_size,
            learning_rate=learning_rate,
            mapping_cache=cache,
            seed=peer.seed + 1000 * round_number + 7,
            replay_texts=peer.private_texts,
        )
    return report
