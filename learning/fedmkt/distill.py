"""Sparse soft targets and the FedMKT loss.

A target is a short list per position: ``k`` own-vocabulary token ids and their
probabilities. A dense ``[batch, length, vocab]`` target would be gigabytes for real
vocabularies, so it is never built: the loss gathers the student's log-probabilities
at the listed ids (``logits.gather - logsumexp``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from fedswarm.learning.fedmkt.alignment import TokenAlignment
from fedswarm.learning.fedmkt.knowledge import ExampleKnowledge
from fedswarm.learning.fedmkt.settings import FedMKTSettings
from fedswarm.learning.fedmkt.vocab_mapping import VocabMapping


@dataclass(frozen=True)
class ExampleTargets:
    """Soft targets of one example: ``[L - 1, K]`` own ids and probabilities."""

    indices: np.ndarray  # int64
    probs: np.ndarray  # float32, each row sums to 1
    peer_positions: int  # rows whose chosen distribution came from an aligned peer row


@dataclass(frozen=True)
class SparseTargets:
    """A batch of soft targets: ``indices``/``probs`` ``[B, L, K]``, ``mask`` ``[B, L]``."""

    indices: torch.Tensor
    probs: torch.Tensor
    mask: torch.Tensor


@dataclass(frozen=True)
class PeerExample:
    """A peer's knowledge of one example with what is needed to read it in our terms."""

    knowledge: ExampleKnowledge
    mapping: VocabMapping
    alignment: TokenAlignment  # own token positions against the peer's


def _softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    scaled = logits.astype(np.float32) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    weights = np.exp(scaled)
    return weights / weights.sum(axis=-1, keepdims=True)


def own_distribution(own: ExampleKnowledge, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """The model's own top-k as ``(indices, probs)``, ``[L - 1, k]``."""
    return own.topk_ids.astype(np.int64), _softmax(own.topk_logits, temperature)


def peer_distribution(
    own: ExampleKnowledge, peer: PeerExample, k: int, temperature: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """A peer's distribution re-indexed into our vocabulary, ``[L - 1, k]``.

    Own row ``p`` predicts own token ``p + 1``. When that token is aligned 1:1 with peer
    token ``q + 1``, the peer's row ``q`` predicted the same piece of text and its top-k
    (mapped into our vocabulary) is used; otherwise the row is one-hot on our own token.
    Returns the number of rows taken from the peer as well.
    """
    indices, probs, aligned = _peer_rows(own, peer, k, temperature)
    return indices, probs, int(aligned.sum())


def _peer_rows(
    own: ExampleKnowledge, peer: PeerExample, k: int, temperature: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`peer_distribution` with a boolean ``[L - 1]`` mask of the peer's rows."""
    rows = max(len(own.input_ids) - 1, 0)
    gold = own.input_ids[1:].astype(np.int64)
    indices = np.repeat(gold[:, None], k, axis=1)
    probs = np.zeros((rows, k), dtype=np.float32)
    probs[:, 0] = 1.0
    aligned = np.zeros(rows, dtype=bool)
    peer_k = min(k, peer.knowledge.topk_ids.shape[1])
    for row in range(rows):
        peer_token = peer.alignment.one_to_one(row + 1)
        if peer_token is None or peer_token == 0:
            continue
        peer_row = peer_token - 1
        ids = peer.knowledge.topk_ids[peer_row, :peer_k]
        indices[row, :peer_k] = peer.mapping.map_ids(ids)
        probs[row] = 0.0
        probs[row, :peer_k] = _softmax(peer.knowledge.topk_logits[peer_row, :peer_k], temperature)
        aligned[row] = True
    return indices, probs, aligned


def _gold_probability(indices: np.ndarray, probs: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Per row, the probability a sparse distribution gives the gold token (0 if absent)."""
    return np.where(indices == gold[:, None], probs, 0.0).sum(axis=1)


def _token_min_ce(
    own: ExampleKnowledge, peers: Sequence[PeerExample], k: int, temperature: float
) -> ExampleTargets:
    """Per row, an aligned peer's distribution where it beats ours on the gold token.

    A row keeps a one-hot target on the gold token (plain LM loss) unless some peer,
    aligned 1:1 there, gives the gold token a higher probability than our own top-k
    does; then the best such peer's distribution is the target. Distilling from our
    own distribution where no teacher is better would only reinforce what we predict.
    """
    gold = own.input_ids[1:].astype(np.int64)
    own_idx, own_probs = own_distribution(own, temperature)
    best = _gold_probability(own_idx, own_probs, gold)
    indices = np.repeat(gold[:, None], k, axis=1)
    probs = np.zeros((len(gold), k), dtype=np.float32)
    probs[:, 0] = 1.0
    used = np.zeros(len(gold), dtype=bool)
    for peer in peers:
        peer_idx, peer_probs, aligned = _peer_rows(own, peer, k, temperature)
        peer_gold = _gold_probability(peer_idx, peer_probs, gold)
        better = aligned & (peer_gold > best)
        indices[better] = peer_idx[better]
        probs[better] = peer_probs[better]
        best = np.where(better, peer_gold, best)
        used |= better
    return ExampleTargets(indices=indices, probs=probs, peer_positions=int(used.sum()))


def example_targets(
    own: ExampleKnowledge, peers: Sequence[PeerExample], settings: FedMKTSettings
) -> ExampleTargets:
    """Choose or mix the own and the peers' distributions for one example.

    ``min_ce`` keeps the single source with the lowest mean cross-entropy on this example
    (``K = k``); ``weighted`` concatenates all sources' supports with probabilities scaled
    by ``softmax(-ce / ce_temperature)`` (``K = k * sources``, still sparse);
    ``token_min_ce`` chooses per row instead of per example (see :func:`_token_min_ce`).
    """
    k = own.topk_ids.shape[1]
    if settings.selection == "token_min_ce":
        return _token_min_ce(own, peers, k, settings.temperature)
    own_idx, own_probs = own_distribution(own, settings.temperature)
    sources: list[tuple[np.ndarray, np.ndarray, int]] = [(own_idx, own_probs, 0)]
    ces = [own.mean_ce]
    for peer in peers:
        sources.append(peer_distribution(own, peer, k, settings.temperature))
        ces.append(peer.knowledge.mean_ce)
    if settings.selection == "min_ce" or len(sources) == 1:
        best = int(np.argmin(np.asarray(ces)))
        indices, probs, used = sources[best]
        return ExampleTargets(indices=indices, probs=probs, peer_positions=used)
    weights = _softmax(-np.asarray(ces, dtype=np.float32), settings.ce_temperature)
    indices = np.concatenate([s[0] for s in sources], axis=1)
    probs = np.concatenate([s[1] * w for s, w in zip(sources, weights, strict=True)], axis=1)
    used = round(sum(s[2] * float(w) for s, w in zip(sources, weights, strict=True)))
    return ExampleTargets(indices=indices, probs=probs.astype(np.float32), peer_positions=used)


def collate_targets(examples: Sequence[ExampleTargets], length: int) -> SparseTargets:
    """Pad a batch of example targets to ``[B, length, K]`` with a zero mask."""
    width = max(e.indices.shape[1] for e in examples)
    indices = torch.zeros((len(examples), length, width), dtype=torch.long)
    probs = torch.zeros((len(examples), length, width), dtype=torch.float32)
    mask = torch.zeros((len(examples), length), dtype=torch.bool)
    for row, example in enumerate(examples):
        n, k = example.indices.shape
        n = min(n, length)
        indices[row, :n, :k] = torch.from_numpy(example.indices[:n])
        probs[row, :n, :k] = torch.from_numpy(example.probs[:n])
        mask[row, :n] = True
    return SparseTargets(indices=indices, probs=probs, mask=mask)


def sparse_distillation_loss(
    student_logits: torch.Tensor,
    targets: SparseTargets,
    temperature: float = 1.0,
    kind: str = "soft_ce",
) -> torch.Tensor:
    """Soft cross-entropy (or KL) of the student against sparse targets.

    ``student_logits`` is ``[B, L, V]`` aligned with the targets (row ``p`` predicts token
    ``p + 1``). Scaled by ``temperature ** 2`` so gradients keep their size across
    temperatures. ``kl`` adds the targets' entropy, which changes the value, not the
    gradient.
    """
    scaled = student_logits.float() / temperature
    log_norm = torch.logsumexp(scaled, dim=-1, keepdim=True)  # [B, L, 1]
    log_q = scaled.gather(-1, targets.indices.to(scaled.device)) - log_norm  # [B, L, K]
    probs = targets.probs.to(scaled.device)
    per_position = -(probs * log_q).sum(-1)
    if kind == "kl":
        entropy_term = torch.where(probs > 0, probs * torch.log(probs.clamp_min(1e-12)), 0.0)
        per_position = per_position + entropy_term.sum(-1)
    mask = targets.mask.to(scaled.device).float()
    return (per_position * mask).sum() / mask.sum().clamp_min(1.0) * temperature**2


def lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy; ``mask`` ``[B, L - 1]`` marks real predictions."""
    predicted = logits[:, :-1].float()
    targets = input_ids[:, 1:]
    losses = torch.nn.functional.cross_entropy(
        predicted.reshape(-1, predicted.shape[-1]), targets.reshape(-1), reduction="none"
    ).view_as(targets)
    weights = mask.float()
    return (losses * weights).sum() / weights.sum().clamp_min(1.0)


def fedmkt_loss(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    targets: SparseTargets,
    settings: FedMKTSettings,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``alpha * lm + (1 - alpha) * distill``; returns (total, lm, distill)."""
    lm = lm_loss(logits, input_ids, targets.mask[:, : input_ids.shape[1] - 1])
    distill = sparse_distillation_loss(
        logits[:, :-1], targets, settings.temperature, settings.distill_loss
    )
    total = settings.alpha * lm + (1.0 - settings.alpha) * distill
    return total, lm, distill
