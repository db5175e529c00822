"""The FedMKT distillation loop and local LM training.

The daemon carries :class:`PublicKnowledge` blobs between peers; everything here is
local: given our model, our knowledge and the peers' knowledge, build sparse targets
once (vocabulary mapping + DTW alignment) and train for a number of AdamW steps.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from fedswarm.learning.fedmkt.alignment import align_tokens
from fedswarm.learning.fedmkt.distill import (
    ExampleTargets,
    PeerExample,
    collate_targets,
    example_targets,
    fedmkt_loss,
    lm_loss,
)
from fedswarm.learning.fedmkt.errors import KnowledgeError
from fedswarm.learning.fedmkt.knowledge import PublicKnowledge
from fedswarm.learning.fedmkt.public_data import PublicDataset
from fedswarm.learning.fedmkt.settings import FedMKTSettings
from fedswarm.learning.fedmkt.vocab_mapping import (
    VocabMapping,
    VocabMappingCache,
    build_vocab_mapping,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillStats:
    """Losses of a distillation run and how much peer knowledge reached the targets."""

    steps: int
    first_loss: float
    last_loss: float
    mean_lm_loss: float
    mean_distill_loss: float
    peer_position_fraction: float  # share of target rows taken from an aligned peer


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _padded(batch: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(list(ids), dtype=torch.long)
        attention[row, : len(ids)] = 1
    return input_ids, attention


def build_example_targets(
    own: PublicKnowledge,
    peers: Sequence[PublicKnowledge],
    settings: FedMKTSettings,
    mapping_cache: VocabMappingCache | None = None,
) -> list[ExampleTargets]:
    """Map each peer's vocabulary, DTW-align every example, choose soft targets."""
    own_card = own.tokenizer
    mappings: list[VocabMapping] = []
    for peer in peers:
        if mapping_cache is None:
            mappings.append(build_vocab_mapping(peer.tokenizer, own_card))
        else:
            mappings.append(mapping_cache.get_or_build(peer.tokenizer, own_card))
    own_norm = own_card.normalised()
    peer_norms = [peer.tokenizer.normalised() for peer in peers]
    targets: list[ExampleTargets] = []
    for index, own_example in enumerate(own.examples):
        own_strings = [own_norm[i] for i in own_example.input_ids.tolist()]
        peer_examples: list[PeerExample] = []
        for peer, mapping, norm in zip(peers, mappings, peer_norms, strict=True):
            peer_example = peer.examples[index]
            peer_strings = [norm[i] for i in peer_example.input_ids.tolist()]
            peer_examples.append(
                PeerExample(
                    knowledge=peer_example,
                    mapping=mapping,
                    alignment=align_tokens(own_strings, peer_strings),
                )
            )
        targets.append(example_targets(own_example, peer_examples, settings))
    return targets


def accept_peer_knowledge(
    blobs: dict[str, bytes], public: PublicDataset
) -> tuple[list[PublicKnowledge], dict[str, str]]:
    """Decode and validate received blobs; bad ones are dropped with their reason."""
    accepted: list[PublicKnowledge] = []
    rejected: dict[str, str] = {}
    for name, blob in blobs.items():
        try:
            knowledge = PublicKnowledge.decode(blob)
            knowledge.validate(expected_public_sha256=public.sha256, expected_examples=len(public))
        except KnowledgeError as exc:
            log.warning("dropping FedMKT knowledge from %s: %s", name, exc)
            rejected[name] = str(exc)
            continue
        accepted.append(knowledge)
    return accepted, rejected


def distill(
    model: torch.nn.Module,
    tokenizer: Any,
    own: PublicKnowledge,
    peers: Sequence[PublicKnowledge],
    settings: FedMKTSettings,
    steps: int,
    batch_size: int = 8,
    learning_rate: float = 1e-3,
    mapping_cache: VocabMappingCache | None = None,
    seed: int = 0,
    replay_texts: Sequence[str] | None = None,
    replay_ids: Sequence[Sequence[int]] | None = None,
) -> DistillStats:
    """Train ``model`` on the public set with ``alpha * lm + (1 - alpha) * distill``.

    ``own`` must be this model's knowledge (its input ids are reused as training
    inputs, so targets and inputs share one tokenisation). Only parameters with
    ``requires_grad`` are trained, so a peft-wrapped model trains its adapter only.

    With ``settings.replay_fraction`` > 0 and ``replay_texts`` (the member's private
    texts), that share of every batch's examples is own data under the plain LM loss:
    the step's loss is the example-weighted mean of the public loss and the replay loss,
    so a step still sees ``batch_size`` examples. ``replay_ids`` is the same own data
    already tokenised (the daemon passes its training examples' token ids, so nothing is
    read or tokenised twice); both may be given.
    """
    targets = build_example_targets(own, peers, settings, mapping_cache)
    rows = sum(t.indices.shape[0] for t in targets)
    peer_rows = sum(t.peer_positions for t in targets)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = _device_of(model)
    optimizer = torch.optim.AdamW(_trainable(model), lr=learning_rate)
    order = random.Random(seed)
    indices = [i for i, e in enumerate(own.examples) if len(e.input_ids) > 1]
    replay = _encode(tokenizer, replay_texts or [], settings.max_length)
    replay += [
        [int(i) for i in ids[: settings.max_length]] for ids in replay_ids or [] if len(ids) > 1
    ]
    replay_size = round(batch_size * settings.replay_fraction) if replay else 0
    replay_size = min(replay_size, batch_size - 1)
    public_size = batch_size - replay_size
    losses: list[float] = []
    lm_losses: list[float] = []
    distill_losses: list[float] = []
    model.train()
    for _ in range(steps):
        chosen = order.sample(indices, min(public_size, len(indices)))
        input_ids, attention = _padded([own.examples[i].input_ids.tolist() for i in chosen], pad_id)
        batch_targets = collate_targets([targets[i] for i in chosen], input_ids.shape[1] - 1)
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
        total, lm, distill_part = fedmkt_loss(logits, input_ids.to(device), batch_targets, settings)
        if replay_size:
            own_batch = order.sample(replay, min(replay_size, len(replay)))
            own_ids, own_attention = _padded(own_batch, pad_id)
            own_ids, own_attention = own_ids.to(device), own_attention.to(device)
            own_logits = model(input_ids=own_ids, attention_mask=own_attention).logits
            replay_loss = lm_loss(own_logits, own_ids, own_attention[:, 1:].bool())
            share = len(own_batch) / (len(own_batch) + len(chosen))
            total = (1.0 - share) * total + share * replay_loss
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        losses.append(total.item())
        lm_losses.append(lm.item())
        distill_losses.append(distill_part.item())
    return DistillStats(
        steps=steps,
        first_loss=losses[0] if losses else float("nan"),
        last_loss=losses[-1] if losses else float("nan"),
        mean_lm_loss=sum(lm_losses) / max(len(lm_losses), 1),
        mean_distill_loss=sum(distill_losses) / max(len(distill_losses), 1),
        peer_position_fraction=peer_rows / max(rows, 1),
    )


def _encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of ``texts`` (truncated), dropping those too short to predict anything."""
    encoded = [
        [int(i) for i in tokenizer(t, truncation=True, max_length=max_length)["input_ids"]]
        for t in texts
    ]
    return [ids for ids in encoded if len(ids) > 1]


def train_causal_lm(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    steps: int,
    batch_size: int = 8,
    learning_rate: float = 1e-3,
    max_length: int = 128,
    seed: int = 0,
) -> list[float]:
    """Plain next-token training on private texts (the local step of a round)."""
    encoded = _encode(tokenizer, texts, max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = _device_of(model)
    optimizer = torch.optim.AdamW(_trainable(model), lr=learning_rate)
    order = random.Random(seed)
    losses: list[float] = []
    model.train()
    for _ in range(steps):
        batch = order.sample(encoded, min(batch_size, len(encoded)))
        input_ids, attention = _padded(batch, pad_id)
        input_ids, attention = input_ids.to(device), attention.to(device)
        logits = model(input_ids=input_ids, attention_mask=attention).logits
        loss = lm_loss(logits, input_ids, attention[:, 1:].bool())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def evaluate_lm_loss(
    model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], max_length: int = 128
) -> float:
    """Token-weighted mean next-token cross-entropy over ``texts``."""
    was_training = model.training
    model.eval()
    device = _device_of(model)
    total, count = 0.0, 0
    for text in texts:
        ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
        if len(ids) < 2:
            continue
        input_ids = torch.tensor([ids], dtype=torch.long, device=device)
        logits = model(input_ids=input_ids).logits
        mask = torch.ones((1, len(ids) - 1), dtype=torch.bool, device=device)
        total += float(lm_loss(logits, input_ids, mask)) * (len(ids) - 1)
        count += len(ids) - 1
    model.train(was_training)
    return total / max(count, 1)
