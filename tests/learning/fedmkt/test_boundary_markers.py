"""Word-boundary markers are read from the tokenizer itself and normalised away."""

from __future__ import annotations

import pytest
from fedswarm.learning.fedmkt.boundary import (
    BoundaryStyle,
    TokenizerCard,
    detect_boundary_style,
    normalise_token,
)
from fedswarm.learning.fedmkt.errors import UnsupportedTokenizerError
from transformers import PreTrainedTokenizerFast

BYTE_LEVEL = BoundaryStyle(word_start_marker="Ġ", byte_level=True)
METASPACE = BoundaryStyle(word_start_marker="▁")
WORDPIECE = BoundaryStyle(continuation_marker="##")


def test_byte_level_bpe_is_detected(byte_bpe: PreTrainedTokenizerFast) -> None:
    assert detect_boundary_style(byte_bpe) == BoundaryStyle(
        word_start_marker="Ġ", continuation_marker=None, byte_level=True
    )


def test_metaspace_unigram_is_detected(metaspace_unigram: PreTrainedTokenizerFast) -> None:
    assert detect_boundary_style(metaspace_unigram) == BoundaryStyle(
        word_start_marker="▁", continuation_marker=None, byte_level=False
    )


def test_wordpiece_continuation_is_detected(wordpiece: PreTrainedTokenizerFast) -> None:
    assert detect_boundary_style(wordpiece) == BoundaryStyle(
        word_start_marker=None, continuation_marker="##", byte_level=False
    )


def test_same_word_from_three_families_normalises_equal(
    byte_bpe: PreTrainedTokenizerFast,
    metaspace_unigram: PreTrainedTokenizerFast,
    wordpiece: PreTrainedTokenizerFast,
) -> None:
    spellings = set()
    for tokenizer in (byte_bpe, metaspace_unigram, wordpiece):
        card = TokenizerCard.from_tokenizer(tokenizer)
        pieces = tokenizer.tokenize(" the cat")
        spellings.add("".join(normalise_token(p, card.style) for p in pieces).strip())
    assert spellings == {"the cat"}


@pytest.mark.parametrize(
    ("token", "style", "expected"),
    [
        ("Ġcat", BYTE_LEVEL, " cat"),
        ("cat", BYTE_LEVEL, "cat"),
        ("ĠcafÃ©", BYTE_LEVEL, " café"),  # é as two byte-level characters
        ("Ã", BYTE_LEVEL, "<0xC3>"),  # half a UTF-8 character
        ("▁cat", METASPACE, " cat"),
        ("cat", METASPACE, "cat"),
        ("▁café", METASPACE, " café"),
        ("<0x41>", METASPACE, "A"),  # sentencepiece byte fallback
        ("<0xC3>", METASPACE, "<0xC3>"),
        ("cat", WORDPIECE, " cat"),
        ("##cat", WORDPIECE, "cat"),
        ("cafe\u0301", METASPACE, "café"),  # decomposed accent becomes NFC
    ],
)
def test_normalise_token(token: str, style: BoundaryStyle, expected: str) -> None:
    assert normalise_token(token, style) == expected


def test_partial_utf8_bytes_agree_between_byte_level_and_byte_fallback() -> None:
    assert normalise_token("Ã", BYTE_LEVEL) == normalise_token("<0xC3>", METASPACE)


def test_style_json_round_trip_and_rejects_garbage() -> None:
    assert BoundaryStyle.from_json(BYTE_LEVEL.to_json()) == BYTE_LEVEL
    with pytest.raises(ValueError):
        BoundaryStyle.from_json('{"word_start_marker": 3, "byte_level": false}')


def test_tokenizer_without_fast_backend_is_refused() -> None:
    with pytest.raises(UnsupportedTokenizerError):
        detect_boundary_style(object())
