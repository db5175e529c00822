"""Small real tokenizers and models shared by the FedMKT tests (trained in seconds)."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from .toy_world import build_toy_world, tiny_llama, train_byte_bpe, train_metaspace_unigram

CORPUS = [
    "the cat sat on the mat and the dog ran",
    "naïve café owners serve crème brûlée",
    "hello world, hello tokenizer",
] * 10


@pytest.fixture(scope="session")
def byte_bpe() -> PreTrainedTokenizerFast:
    return train_byte_bpe(CORPUS, vocab_size=320)


@pytest.fixture(scope="session")
def metaspace_unigram() -> PreTrainedTokenizerFast:
    return train_metaspace_unigram(CORPUS, vocab_size=120)


@pytest.fixture(scope="session")
def wordpiece() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    backend.train_from_iterator(
        CORPUS, trainers.WordPieceTrainer(vocab_size=150, special_tokens=["[UNK]", "[PAD]"])
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")


@pytest.fixture(scope="session")
def tiny_model_and_tokenizer(byte_bpe: PreTrainedTokenizerFast):  # type: ignore[no-untyped-def]
    return tiny_llama(len(byte_bpe), hidden=32, layers=1, seed=0), byte_bpe


@pytest.fixture(scope="session")
def toy_world():  # type: ignore[no-untyped-def]
    return build_toy_world(private_count=64, public_count=48, eval_count=16, seed=0)
