"""A tiny, self-contained FedMKT world for tests and the benchmark.

Two "organisations" write about different domains, run Llama-architecture models of
different sizes, and use tokenizers of different families (byte-level BPE versus a
sentencepiece-style Unigram with ``▁``). Everything is generated from a seed in a few
seconds on a CPU: no downloads.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

_DOMAINS: dict[str, dict[str, list[str]]] = {
    "kitchen": {
        "subject": ["the baker", "the chef", "my aunt", "the cook", "our neighbour"],
        "verb": ["bakes", "stirs", "slices", "roasts", "seasons", "simmers"],
        "object": ["fresh bread", "tomato soup", "garlic butter", "apple pie", "onion stew"],
        "tail": ["with rosemary", "before dinner", "in a clay pot", "over low heat"],
    },
    "harbour": {
        "subject": ["the captain", "the sailor", "a fisherman", "the pilot", "our skipper"],
        "verb": ["anchors", "steers", "repairs", "unloads", "ties", "paints"],
        "object": ["the wooden boat", "heavy nets", "a rusty chain", "the blue ferry"],
        "tail": ["at high tide", "near the lighthouse", "before the storm", "in the fog"],
    },
    # The general domain of the large model in the paper-shaped benchmark (bench/fedmkt.py).
    "town": {
        "subject": ["the mayor", "a teacher", "the postman", "my cousin", "the grocer", "a child"],
        "verb": ["visits", "opens", "cleans", "reads", "sells", "watches", "paints"],
        "object": ["the old library", "a busy market", "the town hall", "the morning paper"],
        "tail": ["on monday", "after school", "in the square", "with a smile", "at noon"],
    },
}

#: The two domains of the original toy world (tests rely on these).
PAIR_DOMAINS = ("harbour", "kitchen")


def domain_names() -> list[str]:
    return list(PAIR_DOMAINS)


def domain_texts(domain: str, count: int, seed: int) -> list[str]:
    """``count`` sentences of one domain, two clauses each, reproducible by seed."""
    grammar = _DOMAINS[domain]
    rng = random.Random(f"{domain}:{seed}")
    texts = []
    for _ in range(count):
        clauses = [
            " ".join(rng.choice(grammar[part]) for part in ("subject", "verb", "object", "tail"))
            for _ in range(2)
        ]
        texts.append(" and ".join(clauses).capitalize() + ".")
    return texts


def _as_transformers(backend: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def train_byte_bpe(texts: list[str], vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE tokenizer (``Ġ`` word starts)."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(texts, trainer)
    return _as_transformers(backend)


def train_metaspace_unigram(texts: list[str], vocab_size: int = 200) -> PreTrainedTokenizerFast:
    """A sentencepiece-style Unigram tokenizer (``▁`` word starts)."""
    backend = Tokenizer(models.Unigram())
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>", "<unk>"], unk_token="<unk>"
    )
    backend.train_from_iterator(texts, trainer)
    return _as_transformers(backend)


def train_metaspace_bpe(texts: list[str], vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A sentencepiece-BPE-style tokenizer (``▁`` word starts, Llama-2 style, no bytes)."""
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>", "<unk>"]
    )
    backend.train_from_iterator(texts, trainer)
    return _as_transformers(backend)


def tiny_llama(vocab_size: int, hidden: int, layers: int, seed: int) -> LlamaForCausalLM:
    """A randomly initialised Llama-architecture causal LM of the given size."""
    import torch

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


@dataclass(frozen=True)
class ToyWorld:
    """Texts of the toy federation: private per domain, a shared public set, evals."""

    private: dict[str, list[str]]
    public: list[str]
    evaluation: dict[str, list[str]]


def build_toy_world(
    private_count: int = 64,
    public_count: int = 48,
    eval_count: int = 16,
    seed: int = 0,
    domains: tuple[str, ...] = PAIR_DOMAINS,
) -> ToyWorld:
    """Disjoint private, public and evaluation sentences for both domains.

    The public set mixes both domains: each peer's predictions on the other domain's
    public examples are where it has something to teach.
    """
    private: dict[str, list[str]] = {}
    evaluation: dict[str, list[str]] = {}
    public: list[str] = []
    share = public_count // len(domains)
    for index, name in enumerate(domains):
        texts = domain_texts(name, private_count + share + eval_count, seed + index)
        private[name] = texts[:private_count]
        public.extend(texts[private_count : private_count + share])
        evaluation[name] = texts[private_count + share :]
    random.Random(seed).shuffle(public)
    return ToyWorld(private=private, public=public, evaluation=evaluation)
