"""DTW pairs positions of two tokenisations; only 1:1 pairs carry a peer's distribution."""

from __future__ import annotations

import itertools

import numpy as np
from fedswarm.learning.fedmkt.alignment import align_tokens, dtw_path
from fedswarm.learning.fedmkt.boundary import BoundaryStyle, normalise_tokens

BYTE_LEVEL = BoundaryStyle(word_start_marker="Ġ", byte_level=True)
METASPACE = BoundaryStyle(word_start_marker="▁")
WORDPIECE = BoundaryStyle(continuation_marker="##")


def test_identical_sequences_align_one_to_one() -> None:
    tokens = [" the", " cat", " sat"]
    alignment = align_tokens(tokens, tokens)
    assert [alignment.one_to_one(i) for i in range(3)] == [0, 1, 2]
    assert alignment.one_to_one_fraction() == 1.0


def test_split_word_falls_back_but_neighbours_stay_one_to_one() -> None:
    own = normalise_tokens(["Ġthe", "Ġcatalogue", "Ġsat"], BYTE_LEVEL)
    peer = normalise_tokens(["▁the", "▁cata", "logue", "▁sat"], METASPACE)
    alignment = align_tokens(own, peer)
    assert alignment.one_to_one(0) == 0
    assert alignment.one_to_one(1) is None
    assert alignment.own_to_peer[1] == (1, 2)
    assert alignment.one_to_one(2) == 3


def test_many_own_tokens_to_one_peer_token_is_not_one_to_one() -> None:
    own = normalise_tokens(["▁play", "ing", "▁now"], METASPACE)
    peer = normalise_tokens(["playing", "now"], WORDPIECE)
    alignment = align_tokens(own, peer)
    assert alignment.peer_to_own[0] == (0, 1)
    assert alignment.one_to_one(0) is None and alignment.one_to_one(1) is None
    assert alignment.one_to_one(2) == 1


def test_unicode_and_byte_fallback_align_after_normalising() -> None:
    own = normalise_tokens(["▁caf", "é", "<0xE6>", "<0x97>", "<0xA5>"], METASPACE)
    peer = normalise_tokens(["Ġcaf", "Ã©", "æĹ¥"], BYTE_LEVEL)
    alignment = align_tokens(own, peer)
    assert alignment.one_to_one(0) == 0
    assert alignment.one_to_one(1) == 1
    assert all(p == (2,) for p in alignment.own_to_peer[2:])


def test_path_is_monotone_and_covers_both_ends() -> None:
    rng = np.random.default_rng(0)
    cost = rng.random((7, 5)).astype(np.float32)
    path = dtw_path(cost)
    assert path[0] == (0, 0) and path[-1] == (6, 4)
    for (i0, j0), (i1, j1) in itertools.pairwise(path):
        assert (i1 - i0, j1 - j0) in {(1, 1), (1, 0), (0, 1)}


def test_empty_sequences_give_empty_alignment() -> None:
    assert align_tokens([], [" a"]).own_to_peer == ()
    assert align_tokens([" a"], []).own_to_peer == ((),)
