"""The shared alignment set: pinned safe demonstrations mixed into every member's training.

A member's screen removes what it knows is bad; it cannot add what the federation wants
every model to keep doing (refuse a harmful request, answer in the agreed style). The
alignment set is one file every member holds, pinned by the content hash FedMKT uses for
its public set (``fedmkt.public_data``), and each member draws ``share`` of every epoch's
training examples from it, so no member's private data can train the behaviour away
unopposed.
"""

from __future__ import annotations

import random

from fedswarm.learning.data_files import Row
from fedswarm.learning.errors import DataError
from fedswarm.learning.examples import Example, encode_text
from fedswarm.learning.fedmkt.errors import PublicDataError
from fedswarm.learning.fedmkt.public_data import load_public_dataset
from fedswarm.learning.settings import AlignmentSettings
from transformers import PreTrainedTokenizerBase


def alignment_count(private: int, share: float) -> int:
    """How many alignment examples make ``share`` of an epoch next to ``private`` ones."""
    return max(1, round(share * private / (1.0 - share)))


def load_alignment_examples(
    settings: AlignmentSettings, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> list[Example]:
    """The set's rows, hash-checked, one example per row (never packed with private text)."""
    try:
        dataset = load_public_dataset(settings.path, expected_sha256=settings.sha256)
    except PublicDataError as exc:  # not a LearningError: the daemon's one-line errors are
        raise DataError(f"[data.alignment] {exc}") from None
    rows = [Row("text", {"text": t}, settings.path, i) for i, t in enumerate(dataset.texts, 1)]
    return encode_text(rows, tokenizer, max_length, packing=False)


def mix_alignment(
    private: list[Example], alignment: list[Example], share: float, seed: int
) -> list[Example]:
    """``private`` followed by ``alignment_count`` alignment examples (a seeded order,
    cycled when the set is smaller); the batch stream shuffles them together each epoch."""
    order = list(range(len(alignment)))
    random.Random(seed).shuffle(order)
    count = alignment_count(len(private), share)
    return private + [alignment[order[i % len(order)]] for i in range(count)]
