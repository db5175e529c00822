"""Soft targets stay sparse ([B, L, K], K << V) and the loss matches the dense formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fedswarm.learning.fedmkt.alignment import align_tokens
from fedswarm.learning.fedmkt.boundary import BoundaryStyle, TokenizerCard
from fedswarm.learning.fedmkt.distill import (
    PeerExample,
    collate_targets,
    example_targets,
    fedmkt_loss,
    sparse_distillation_loss,
)
from fedswarm.learning.fedmkt.knowledge import ExampleKnowledge
from fedswarm.learning.fedmkt.settings import FedMKTSettings
from fedswarm.learning.fedmkt.vocab_mapping import build_vocab_mapping

OWN = TokenizerCard(("<pad>", "▁the", "▁cat", "▁sat", "▁cata", "logue"), BoundaryStyle("▁"))
PEER = TokenizerCard(("Ġsat", "Ġcat", "Ġthe", "Ġcatalogue"), BoundaryStyle("Ġ", None, True))


def _knowledge(ids: list[int], k: int, top: list[list[int]], ce: float) -> ExampleKnowledge:
    rows = len(ids) - 1
    logits = np.tile(np.arange(k, 0, -1, dtype=np.float16), (rows, 1))
    return ExampleKnowledge(
        input_ids=np.array(ids, dtype=np.int32),
        topk_ids=np.array(top, dtype=np.int32).reshape(rows, k),
        topk_logits=logits,
        mean_ce=ce,
    )


def _peer_example(own: ExampleKnowledge, peer: ExampleKnowledge) -> PeerExample:
    own_norm, peer_norm = OWN.normalised(), PEER.normalised()
    alignment = align_tokens(
        [own_norm[i] for i in own.input_ids], [peer_norm[i] for i in peer.input_ids]
    )
    return PeerExample(knowledge=peer, mapping=build_vocab_mapping(PEER, OWN), alignment=alignment)


def test_min_ce_picks_the_peer_and_reindexes_its_top_k() -> None:
    own = _knowledge([1, 2, 3], 2, [[2, 3], [3, 1]], ce=3.0)  # "the cat sat"
    peer = _knowledge([2, 1, 0], 2, [[1, 0], [0, 2]], ce=1.0)  # same text, peer ids
    targets = example_targets(own, [_peer_example(own, peer)], FedMKTSettings(top_k=2))
    assert targets.indices.shape == (2, 2) and targets.probs.shape == (2, 2)
    assert targets.indices.tolist() == [[2, 3], [3, 1]]  # peer ids 1,0 -> cat, sat; 0,2 -> sat, the
    assert targets.peer_positions == 2
    np.testing.assert_allclose(targets.probs.sum(-1), 1.0, rtol=1e-6)


def test_unaligned_position_falls_back_to_one_hot_on_own_token() -> None:
    own = _knowledge([1, 4, 5, 3], 2, [[4, 2], [5, 3], [3, 1]], ce=3.0)  # the cata logue sat
    peer = _knowledge([2, 3, 0], 2, [[3, 1], [0, 2]], ce=1.0)  # the catalogue sat
    targets = example_targets(own, [_peer_example(own, peer)], FedMKTSettings(top_k=2))
    assert targets.indices[0].tolist() == [4, 4] and targets.probs[0].tolist() == [1.0, 0.0]
    assert targets.indices[1].tolist() == [5, 5] and targets.probs[1].tolist() == [1.0, 0.0]
    assert targets.indices[2].tolist() == [3, 1]  # "sat" aligned 1:1: peer row 1 mapped
    assert targets.peer_positions == 1


def test_min_ce_keeps_own_distribution_when_own_is_better() -> None:
    own = _knowledge([1, 2, 3], 2, [[2, 3], [3, 1]], ce=0.5)
    peer = _knowledge([2, 1, 0], 2, [[1, 0], [0, 2]], ce=1.0)
    targets = example_targets(own, [_peer_example(own, peer)], FedMKTSettings(top_k=2))
    assert targets.indices.tolist() == own.topk_ids.tolist()
    assert targets.peer_positions == 0


def test_weighted_selection_concatenates_sparse_supports() -> None:
    own = _knowledge([1, 2, 3], 2, [[2, 3], [3, 1]], ce=2.0)
    peer = _knowledge([2, 1, 0], 2, [[1, 0], [0, 2]], ce=1.0)
    settings = FedMKTSettings(top_k=2, selection="weighted")
    targets = example_targets(own, [_peer_example(own, peer)], settings)
    assert targets.indices.shape == (2, 4)
    np.testing.assert_allclose(targets.probs.sum(-1), 1.0, rtol=1e-5)
    peer_weight = 1 / (1 + np.exp(-1.0))  # softmax(-[2, 1])[1]
    np.testing.assert_allclose(targets.probs[:, 2:].sum(-1), peer_weight, rtol=1e-5)


def test_batch_targets_are_b_l_k_never_b_l_v() -> None:
    vocab, k = 50_000, 4
    own = _knowledge([1, 2, 3, 1, 2], k, [[1, 2, 3, 4]] * 4, ce=1.0)
    short = _knowledge([1, 2], k, [[1, 2, 3, 4]], ce=1.0)
    settings = FedMKTSettings(top_k=k)
    batch = collate_targets(
        [example_targets(own, [], settings), example_targets(short, [], settings)], 4
    )
    assert batch.indices.shape == (2, 4, k) and batch.probs.shape == (2, 4, k)
    assert batch.indices.numel() < vocab  # nothing vocabulary-sized was built
    assert batch.mask.tolist() == [[True] * 4, [True, False, False, False]]


def test_sparse_loss_equals_dense_soft_cross_entropy_on_the_support() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 11, requires_grad=True)
    own = _knowledge([1, 2, 3, 4], 3, [[5, 1, 9]] * 3, ce=1.0)
    batch = collate_targets([example_targets(own, [], FedMKTSettings(top_k=3))] * 2, 3)
    temperature = 2.0
    loss = sparse_distillation_loss(logits, batch, temperature)
    dense = torch.zeros(2, 3, 11).scatter_add(-1, batch.indices, batch.probs)
    expected = -(dense * torch.log_softmax(logits / temperature, -1)).sum(-1).mean() * 4.0
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_kl_differs_from_soft_ce_by_the_target_entropy_only() -> None:
    logits = torch.randn(1, 3, 7)
    own = _knowledge([1, 2, 3, 4], 3, [[0, 1, 2]] * 3, ce=1.0)
    batch = collate_targets([example_targets(own, [], FedMKTSettings(top_k=3))], 3)
    soft_ce = sparse_distillation_loss(logits, batch, kind="soft_ce")
    kl = sparse_distillation_loss(logits, batch, kind="kl")
    p = batch.probs
    entropy = -(p * torch.log(p)).sum(-1).mean()
    torch.testing.assert_close(soft_ce - kl, entropy)
    assert kl >= 0


@pytest.mark.parametrize("alpha", [0.0, 0.9, 1.0])
def test_total_loss_is_alpha_mix_of_lm_and_distill(alpha: float) -> None:
    torch.manual_seed(1)
    logits = torch.randn(1, 4, 8)
    input_ids = torch.tensor([[1, 2, 3, 4]])
    own = _knowledge([1, 2, 3, 4], 2, [[0, 1]] * 3, ce=1.0)
    batch = collate_targets([example_targets(own, [], FedMKTSettings(top_k=2))], 3)
    total, lm, distill = fedmkt_loss(logits, input_ids, batch, FedMKTSettings(alpha=alpha))
    torch.testing.assert_close(total, alpha * lm + (1 - alpha) * distill)
