"""Issue #26 levers: token-level teacher selection and own-data replay during distillation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fedswarm.learning.fedmkt.distill import example_targets
from fedswarm.learning.fedmkt.errors import FedMKTError
from fedswarm.learning.fedmkt.knowledge import compute_public_knowledge
from fedswarm.learning.fedmkt.public_data import PublicDataset
from fedswarm.learning.fedmkt.settings import FedMKTSettings
from fedswarm.learning.fedmkt.trainer import distill, evaluate_lm_loss

from tests.learning.fedmkt.test_sparse_targets import _knowledge, _peer_example
from tests.learning.fedmkt.toy_world import domain_texts, tiny_llama, train_byte_bpe


def test_token_min_ce_takes_a_peer_row_only_where_it_beats_us_on_the_gold_token() -> None:
    # "the cat sat": own row 0 ranks "sat" above the gold "cat", the peer ranks "cat" first;
    # on row 1 we rank the gold "sat" first, the peer second.
    own = _knowledge([1, 2, 3], 2, [[3, 2], [3, 1]], ce=0.5)
    peer = _knowledge([2, 1, 0], 2, [[1, 0], [2, 0]], ce=3.0)
    settings = FedMKTSettings(top_k=2, selection="token_min_ce")
    targets = example_targets(own, [_peer_example(own, peer)], settings)
    assert targets.indices[0].tolist() == [2, 3]  # the peer's row, mapped: cat, sat
    assert targets.probs[0, 0] > targets.probs[0, 1] > 0
    assert targets.indices[1].tolist() == [3, 3]  # no better teacher: one-hot on gold
    assert targets.probs[1].tolist() == [1.0, 0.0]
    assert targets.peer_positions == 1
    # per-example min_ce would have kept our own distribution everywhere (lower mean CE)
    per_example = example_targets(own, [_peer_example(own, peer)], FedMKTSettings(top_k=2))
    assert per_example.peer_positions == 0


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_replay_fraction_is_bounded(fraction: float) -> None:
    with pytest.raises(FedMKTError):
        FedMKTSettings(replay_fraction=fraction)


@pytest.mark.parametrize("given_as", ["texts", "token_ids"])
def test_replay_keeps_the_own_domain_while_distilling_on_public_text(given_as: str) -> None:
    own_texts = domain_texts("kitchen", 48, seed=0)
    public_texts = domain_texts("harbour", 24, seed=1)
    tokenizer = train_byte_bpe(own_texts + public_texts, 300)
    public = PublicDataset.from_texts(public_texts)
    losses = {}
    for fraction in (0.0, 0.5):
        torch.manual_seed(0)
        model = tiny_llama(len(tokenizer), 32, 1, seed=0)
        own = compute_public_knowledge(model, tokenizer, public.texts, public.sha256, top_k=4)
        settings = FedMKTSettings(top_k=4, alpha=1.0, replay_fraction=fraction)
        # the daemon hands its already tokenised training examples, the bench raw texts
        replay = (
            {"replay_texts": own_texts} if given_as == "texts"
            else {"replay_ids": [tokenizer(t)["input_ids"] for t in own_texts]}
        )
        stats = distill(model, tokenizer, own, [], settings, 25, learning_rate=3e-3, **replay)
        assert np.isfinite(stats.last_loss)
        losses[fraction] = evaluate_lm_loss(model, tokenizer, own_texts[:16])
    assert losses[0.5] < 0.9 * losses[0.0], losses


def test_the_daemon_section_accepts_token_min_ce() -> None:
    from fedswarm.federation.fedmkt.settings import FedMKTSection

    assert FedMKTSection(selection="token_min_ce").settings().selection == "token_min_ce"
    assert FedMKTSection().settings().replay_fraction == 0.75  # the measured winner
    assert FedMKTSection(replay_fraction=0.0).settings().replay_fraction == 0.0
    with pytest.raises(ValueError, match="replay_fraction"):
        FedMKTSection(replay_fraction=1.0)
    with pytest.raises(ValueError):
        FedMKTSection(selection="per_token")  # type: ignore[arg-type]
