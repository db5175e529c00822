"""Peer token ids map into our vocabulary: exact after normalising, else nearest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fedswarm.learning.fedmkt.boundary import BoundaryStyle, TokenizerCard
from fedswarm.learning.fedmkt.vocab_mapping import VocabMappingCache, build_vocab_mapping
from transformers import PreTrainedTokenizerFast

BYTE_LEVEL = BoundaryStyle(word_start_marker="Ġ", byte_level=True)
METASPACE = BoundaryStyle(word_start_marker="▁")
WORDPIECE = BoundaryStyle(continuation_marker="##")


def _card(tokens: list[str], style: BoundaryStyle) -> TokenizerCard:
    return TokenizerCard(tokens=tuple(tokens), style=style)


def test_exact_matches_across_different_boundary_markers() -> None:
    peer = _card(["Ġthe", "cat", "ĠcafÃ©", "Ã"], BYTE_LEVEL)
    own = _card(["<unk>", "<0xC3>", "▁café", "cat", "▁the"], METASPACE)
    mapping = build_vocab_mapping(peer, own)
    assert mapping.peer_to_own.tolist() == [4, 3, 2, 1]
    assert mapping.exact.all()


def test_wordpiece_continuation_maps_to_non_word_start() -> None:
    peer = _card(["play", "##ing", "##s"], WORDPIECE)
    own = _card(["▁play", "ing", "▁ing", "s"], METASPACE)
    mapping = build_vocab_mapping(peer, own)
    assert mapping.peer_to_own.tolist() == [0, 1, 3]


def test_byte_fallback_token_maps_to_the_character() -> None:
    peer = _card(["<0x41>", "<0x21>"], METASPACE)
    own = _card(["Ġx", "!", "A"], BYTE_LEVEL)
    assert build_vocab_mapping(peer, own).peer_to_own.tolist() == [2, 1]


def test_missing_token_falls_back_to_minimum_edit_distance() -> None:
    peer = _card(["▁catalog", "▁zebra", "日本語"], METASPACE)
    own = _card(["Ġcat", "Ġcatalogue", "Ġdog", "Ġzebu", "æĹ¥æľ¬"], BYTE_LEVEL)
    mapping = build_vocab_mapping(peer, own)
    assert mapping.peer_to_own.tolist() == [1, 3, 4]  # " catalogue", " zebu", "日本"
    assert not mapping.exact.any()


def test_nearest_search_widens_when_no_candidate_shares_the_first_character() -> None:
    peer = _card(["▁qat"], METASPACE)
    own = _card(["Ġdog", "Ġcat"], BYTE_LEVEL)
    assert build_vocab_mapping(peer, own).peer_to_own.tolist() == [1]


def test_real_tokenizer_pair_maps_every_id_in_range(
    byte_bpe: PreTrainedTokenizerFast, metaspace_unigram: PreTrainedTokenizerFast
) -> None:
    peer = TokenizerCard.from_tokenizer(byte_bpe)
    own = TokenizerCard.from_tokenizer(metaspace_unigram)
    mapping = build_vocab_mapping(peer, own)
    assert mapping.peer_to_own.shape == (len(peer),)
    assert mapping.peer_to_own.min() >= 0 and mapping.peer_to_own.max() < len(own)
    own_strings = set(own.normalised())
    shared = [i for i, text in enumerate(peer.normalised()) if text in own_strings]
    assert len(shared) > 10  # letters at least, in both spellings
    for peer_id in shared:
        assert mapping.exact[peer_id]
        assert own.normalised()[mapping.peer_to_own[peer_id]] == peer.normalised()[peer_id]


def test_cache_is_keyed_by_both_vocabularies_and_reused(tmp_path: Path) -> None:
    peer = _card(["Ġa", "Ġb"], BYTE_LEVEL)
    own = _card(["▁b", "▁a"], METASPACE)
    cache = VocabMappingCache(tmp_path)
    first = cache.get_or_build(peer, own)
    path = cache.path_for(peer.sha256(), own.sha256())
    assert path.exists()
    assert cache.path_for(own.sha256(), peer.sha256()) != path
    second = cache.get_or_build(peer, own)
    assert np.array_equal(first.peer_to_own, second.peer_to_own)
    assert second.peer_to_own.tolist() == [1, 0]


def test_corrupt_cache_file_is_rebuilt_not_trusted(tmp_path: Path) -> None:
    peer = _card(["Ġa", "Ġb"], BYTE_LEVEL)
    own = _card(["▁b", "▁a"], METASPACE)
    cache = VocabMappingCache(tmp_path)
    path = cache.path_for(peer.sha256(), own.sha256())
    path.write_bytes(b"not an archive")
    assert cache.get_or_build(peer, own).peer_to_own.tolist() == [1, 0]
    assert cache.get_or_build(peer, own).peer_to_own.tolist() == [1, 0]  # file was rewritten


def test_changing_a_token_changes_the_vocab_hash() -> None:
    assert _card(["Ġa"], BYTE_LEVEL).sha256() != _card(["Ġb"], BYTE_LEVEL).sha256()
    assert _card(["a"], BYTE_LEVEL).sha256() != _card(["a"], METASPACE).sha256()
