"""Fixed-length public-set distributions that a homogeneous group can average securely.

Peers sharing one tokenizer need no vocabulary mapping, so instead of sending their
top-k in the clear they can sum fixed-length vectors under secure aggregation and learn
only the group's average. A vector must mean the same thing on every member, so its
layout (the *support*) is derived from public information only: the public set, the
shared tokenizer and ``max_length``. Per prediction row (row ``p`` predicts token
``p + 1``) the slots are

* the true next token (its "gold" slot is 0 when that token is one of the frequent ones,
  whose own slot already carries its mass),
* the ``support_size`` most frequent tokens of the tokenised public set (ties: lowest id),
* "other": the rest of the probability mass,

all from the model's full softmax at temperature 1, followed by one slot per example for
its mean cross-entropy divided by :data:`CE_SCALE` (clipped to [0, 1], so every slot fits
secagg's coordinate clip of 1). :attr:`PublicSupport.fingerprint` hashes everything the
layout depends on, including the tokenisation itself, so two members whose vectors would
mean different things never agree to average them.

The average becomes a teacher :class:`PublicKnowledge` (support ids with their
log-probabilities, sorted descending like a real top-k) that the ordinary distillation
code uses; the "other" mass is dropped, as the clear exchange drops everything past k.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from fedswarm.learning.fedmkt.boundary import TokenizerCard
from fedswarm.learning.fedmkt.errors import SupportAverageError
from fedswarm.learning.fedmkt.knowledge import ExampleKnowledge, PublicKnowledge, tokenize_public
from fedswarm.learning.fedmkt.public_data import PublicDataset

SUPPORT_FORMAT = b"fedswarm-fedmkt-support-v1"
#: Per-example cross-entropy travels as ``ce / CE_SCALE`` in [0, 1] (nats; 32 nats is far
#: above the uniform distribution over any real vocabulary, ln 256k = 12.5).
CE_SCALE = 32.0
#: Log-probability given to support slots whose averaged probability is 0.
LOG_FLOOR = -30.0


@dataclass(frozen=True)
class PublicSupport:
    """The agreed layout of the averaged vector for one tokenizer and public set."""

    input_ids: tuple[np.ndarray, ...]  # per example, the shared tokenisation (int64)
    frequent: np.ndarray  # [support_size] int64, most frequent public-set tokens
    card: TokenizerCard
    public_sha256: str
    fingerprint: str

    @property
    def slots(self) -> int:
        """Values per prediction row: gold + frequent + other."""
        return len(self.frequent) + 2

    @property
    def rows(self) -> int:
        return sum(max(len(ids) - 1, 0) for ids in self.input_ids)

    @property
    def vector_size(self) -> int:
        return self.rows * self.slots + len(self.input_ids)

    def row_ids(self, index: int) -> np.ndarray:
        """``[L - 1, support_size + 1]`` token ids of example ``index``: gold, then frequent."""
        gold = self.input_ids[index][1:]
        ids = np.empty((len(gold), len(self.frequent) + 1), dtype=np.int64)
        ids[:, 0] = gold
        ids[:, 1:] = self.frequent[None, :]
        return ids


def build_public_support(
    tokenizer: Any, public: PublicDataset, max_length: int, support_size: int
) -> PublicSupport:
    """Tokenise the public set and pick its ``support_size`` most frequent tokens."""
    if support_size < 1:
        raise ValueError(f"support_size must be >= 1, got {support_size}")
    card = TokenizerCard.from_tokenizer(tokenizer)
    encoded = tokenize_public(tokenizer, public.texts, max_length)
    ids = [np.asarray(e, dtype=np.int64) for e in encoded]
    flat = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
    counts = np.bincount(flat, minlength=len(card))
    frequent = np.argsort(-counts, kind="stable")[: min(support_size, len(counts))]
    digest = hashlib.sha256(SUPPORT_FORMAT)
    digest.update(card.sha256().encode("ascii"))
    digest.update(public.sha256.encode("ascii"))
    digest.update(struct.pack(">QQ", max_length, support_size))
    for example in ids:
        digest.update(struct.pack(">Q", len(example)))
        digest.update(example.astype(">i8").tobytes())
    return PublicSupport(
        input_ids=tuple(ids),
        frequent=frequent.astype(np.int64),
        card=card,
        public_sha256=public.sha256,
        fingerprint=digest.hexdigest(),
    )


@torch.no_grad()
def support_vector(
    model: torch.nn.Module, support: PublicSupport, batch_size: int = 8
) -> np.ndarray:
    """Project the model's public-set predictions onto the support (float64 vector)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rows: list[np.ndarray] = []
    ces: list[float] = []
    try:
        for start in range(0, len(support.input_ids), batch_size):
            batch = support.input_ids[start : start + batch_size]
            width = max(len(ids) for ids in batch)
            input_ids = torch.zeros((len(batch), width), dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, ids in enumerate(batch):
                input_ids[row, : len(ids)] = torch.from_numpy(ids)
                attention[row, : len(ids)] = 1
            logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device))
            log_probs = torch.log_softmax(logits.logits.float(), dim=-1)
            for row, ids in enumerate(batch):
                index = start + row
                n = len(ids)
                slot_ids = torch.from_numpy(support.row_ids(index)).to(device)
                probs = log_probs[row, : n - 1].gather(-1, slot_ids).exp().double().cpu().numpy()
                probs[np.isin(slot_ids[:, 0].cpu().numpy(), support.frequent), 0] = 0.0
                other = np.clip(1.0 - probs.sum(axis=1, keepdims=True), 0.0, 1.0)
                rows.append(np.concatenate([probs, other], axis=1))
                targets = torch.from_numpy(ids[1:]).to(device)[:, None]
                gold = log_probs[row, : n - 1].gather(-1, targets)
                ces.append(float(-gold.mean()) if n > 1 else 0.0)
    finally:
        model.train(was_training)
    flat = np.concatenate(rows).ravel() if rows else np.zeros(0)
    scaled = np.clip(np.asarray(ces, dtype=np.float64) / CE_SCALE, 0.0, 1.0)
    return np.concatenate([flat, scaled])


@dataclass(frozen=True)
class SupportAverage:
    """The group's average: ``probs [rows, slots]`` and per-example mean CE (nats)."""

    probs: np.ndarray
    mean_ce: np.ndarray


def check_average(vector: np.ndarray, support: PublicSupport, tolerance: float) -> SupportAverage:
    """Refuse an average that no group of honest members could have produced.

    ``tolerance`` is the per-coordinate quantisation bound of the secure sum. Every slot
    must be a probability and every row must sum to one, within that bound; a member
    that lies can still shift mass between slots, exactly as a dishonest member of plain
    averaging (or of the clear exchange) can, but not inject negative or unnormalised
    "probabilities" unnoticed.
    """
    if vector.shape != (support.vector_size,):
        raise SupportAverageError(
            f"average has shape {vector.shape}, the support needs ({support.vector_size},)"
        )
    if not np.isfinite(vector).all():
        raise SupportAverageError("average contains NaN or infinity")
    split = support.rows * support.slots
    probs = vector[:split].reshape(support.rows, support.slots)
    scaled_ce = vector[split:]
    slack = tolerance + 1e-9
    if probs.size and (probs.min() < -slack or probs.max() > 1 + slack):
        raise SupportAverageError(
            f"averaged probabilities span [{probs.min():.6g}, {probs.max():.6g}], not [0, 1]"
        )
    sums = probs.sum(axis=1)
    worst = float(np.abs(sums - 1.0).max()) if sums.size else 0.0
    if worst > support.slots * slack:
        raise SupportAverageError(
            f"an averaged row sums to 1 +- {worst:.6g}, beyond the quantisation bound "
            f"{support.slots * slack:.3g}: a member sent something that is not a distribution"
        )
    if scaled_ce.size and (scaled_ce.min() < -slack or scaled_ce.max() > 1 + slack):
        raise SupportAverageError("averaged cross-entropies lie outside the encoded range")
    return SupportAverage(
        probs=np.clip(probs, 0.0, 1.0), mean_ce=np.clip(scaled_ce, 0.0, 1.0) * CE_SCALE
    )


def teacher_knowledge(average: SupportAverage, support: PublicSupport) -> PublicKnowledge:
    """The group average as a teacher for :func:`distill` (same tokenizer as ours).

    Per row the support ids get ``log(probability)`` as logits (``LOG_FLOOR`` for zero),
    sorted descending; the "other" slot is left out. Softmax at temperature ``T`` over
    these logits is the support-restricted tempered distribution, as for a clear top-k.
    """
    examples: list[ExampleKnowledge] = []
    row = 0
    for index, ids in enumerate(support.input_ids):
        n_rows = max(len(ids) - 1, 0)
        probs = average.probs[row : row + n_rows, : support.slots - 1]
        row += n_rows
        logits = np.log(np.maximum(probs, np.exp(LOG_FLOOR)))
        order = np.argsort(-logits, axis=1, kind="stable")
        examples.append(
            ExampleKnowledge(
                input_ids=ids.astype(np.int32),
                topk_ids=np.take_along_axis(support.row_ids(index), order, axis=1).astype(
                    np.int32
                ),
                topk_logits=np.take_along_axis(logits, order, axis=1).astype(np.float16),
                mean_ce=float(average.mean_ce[index]),
            )
        )
    return PublicKnowledge(
        public_sha256=support.public_sha256, examples=tuple(examples), tokenizer=support.card
    )
