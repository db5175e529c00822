"""Errors raised by FedMKT.

Every problem with data that came from a peer (its knowledge blob, its vocabulary) is
a specific subclass of :class:`KnowledgeError`, so the round can drop that one peer's
contribution with a clear message and go on with the others.
"""

from __future__ import annotations


class FedMKTError(Exception):
    """Base class of every FedMKT error."""


class PublicDataError(FedMKTError):
    """The public data set cannot be read or is not in the expected JSONL form."""


class PublicDataHashMismatchError(PublicDataError):
    """The public data set's content hash differs from the one the federation agreed on.

    Knowledge computed over two different public sets cannot be aligned example by
    example, so a mismatch must stop FedMKT instead of silently training on garbage.
    """


class UnsupportedTokenizerError(FedMKTError):
    """The tokenizer exposes no fast (``tokenizers``) backend to inspect."""


class KnowledgeError(FedMKTError):
    """A peer's public knowledge is unusable; drop it and go on with the round."""


class KnowledgeFormatError(KnowledgeError):
    """The knowledge blob cannot be decoded (truncated, not an archive, wrong fields)."""


class KnowledgeShapeError(KnowledgeError):
    """Arrays have inconsistent or unexpected shapes."""


class KnowledgeNonFiniteError(KnowledgeError):
    """Logits or cross-entropies contain NaN or infinity."""


class KnowledgeVocabRangeError(KnowledgeError):
    """A token id lies outside the sender's vocabulary."""


class KnowledgePublicSetMismatchError(KnowledgeError):
    """The knowledge was computed over a different public data set."""


class VocabMappingCacheError(FedMKTError):
    """A cached vocabulary mapping file is corrupt or belongs to other vocabularies."""


class SupportAverageError(FedMKTError):
    """A securely averaged public-set distribution is not a distribution.

    Honest members' averages sum to one per position (within the quantisation bound);
    anything else means a member fed the secure sum garbage, and the round must not
    distil from it.
    """
