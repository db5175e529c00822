"""End to end: two different models with different tokenizers teach each other.

Kitchen writes about cooking with a byte-level BPE tokenizer and a larger model; Harbour
writes about boats with a sentencepiece-style tokenizer and a smaller model. After
rounds of FedMKT each must predict the *other's* private domain better than a copy that
spent the same number of steps training on its own data alone.

(The public set contains text of both domains, so part of the gain is the LM loss on
public text; ``bench/fedmkt.py`` reports the alpha = 1 ablation that separates the two.)
"""

from __future__ import annotations

import copy

import pytest
import torch
from fedswarm.learning.fedmkt.public_data import PublicDataset
from fedswarm.learning.fedmkt.settings import FedMKTSettings
from fedswarm.learning.fedmkt.trainer import evaluate_lm_loss, train_causal_lm

from .in_memory_round import Participant, mutual_round
from .toy_world import ToyWorld, tiny_llama, train_byte_bpe, train_metaspace_unigram

ROUNDS, LOCAL_STEPS, DISTILL_STEPS, LEARNING_RATE = 3, 20, 20, 3e-3


@pytest.fixture
def one_torch_thread():  # type: ignore[no-untyped-def]
    """Tiny models run fastest single-threaded; oversubscribed threads crawl on 2 cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.slow
def test_fedmkt_beats_local_only_on_the_other_domain(  # type: ignore[no-untyped-def]
    toy_world: ToyWorld, tmp_path, one_torch_thread
) -> None:
    torch.manual_seed(0)
    kitchen_tok = train_byte_bpe(toy_world.private["kitchen"] + toy_world.public, 600)
    harbour_tok = train_metaspace_unigram(toy_world.private["harbour"] + toy_world.public, 300)
    kitchen = tiny_llama(len(kitchen_tok), hidden=64, layers=2, seed=0)
    harbour = tiny_llama(len(harbour_tok), hidden=32, layers=1, seed=1)
    local_kitchen, local_harbour = copy.deepcopy(kitchen), copy.deepcopy(harbour)
    assert sum(p.numel() for p in kitchen.parameters()) > sum(
        p.numel() for p in harbour.parameters()
    )

    public = PublicDataset.from_texts(toy_world.public)
    participants = [
        Participant("kitchen", kitchen, kitchen_tok, toy_world.private["kitchen"], seed=0),
        Participant("harbour", harbour, harbour_tok, toy_world.private["harbour"], seed=1),
    ]
    settings = FedMKTSettings(top_k=8, public_sha256=public.sha256)
    for number in range(ROUNDS):
        report = mutual_round(
            participants,
            public,
            settings,
            LOCAL_STEPS,
            DISTILL_STEPS,
            learning_rate=LEARNING_RATE,
            mapping_cache_dir=tmp_path,
            round_number=number,
        )
        assert report.rejected == {"kitchen": {}, "harbour": {}}
        assert all(stats.peer_position_fraction > 0 for stats in report.distill.values())

    steps = ROUNDS * (LOCAL_STEPS + DISTILL_STEPS)
    train_causal_lm(
        local_kitchen,
        kitchen_tok,
        toy_world.private["kitchen"],
        steps,
        learning_rate=LEARNING_RATE,
        seed=0,
    )
    train_causal_lm(
        local_harbour,
        harbour_tok,
        toy_world.private["harbour"],
        steps,
        learning_rate=LEARNING_RATE,
        seed=1,
    )

    for fed, local, tok, other in (
        (kitchen, local_kitchen, kitchen_tok, "harbour"),
        (harbour, local_harbour, harbour_tok, "kitchen"),
    ):
        texts = toy_world.evaluation[other]
        assert evaluate_lm_loss(fed, tok, texts) < 0.8 * evaluate_lm_loss(local, tok, texts)
