"""FedMKT: mutual knowledge transfer between peers running different models.

Each peer runs its model over a shared public data set, keeps the top-k next-token
logits per position, and sends them (with its vocabulary) to the others. A receiver maps
the sender's tokens into its own vocabulary, aligns the two tokenisations of every
example by dynamic time warping, and distils from sparse soft targets. See
``docs/fedmkt.md`` for the algorithm and what is revealed to whom.

The torch-backed names are imported on first use (PEP 562), so reading a config
(``fedswarm config check``: the settings, errors and public-set check) stays free of
torch.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from fedswarm.learning.fedmkt.errors import (
    FedMKTError,
    KnowledgeError,
    KnowledgeFormatError,
    KnowledgeNonFiniteError,
    KnowledgePublicSetMismatchError,
    KnowledgeShapeError,
    KnowledgeVocabRangeError,
    PublicDataError,
    PublicDataHashMismatchError,
    SupportAverageError,
    UnsupportedTokenizerError,
    VocabMappingCacheError,
)
from fedswarm.learning.fedmkt.public_data import (
    PublicDataset,
    content_sha256,
    load_public_dataset,
)
from fedswarm.learning.fedmkt.settings import (
    FedMKTSettings,
)
from fedswarm.learning.lazy_exports import import_lazily

if TYPE_CHECKING:
    from fedswarm.learning.fedmkt.alignment import (
        TokenAlignment,
        align_tokens,
        dtw_path,
    )
    from fedswarm.learning.fedmkt.boundary import (
        BoundaryStyle,
        TokenizerCard,
        detect_boundary_style,
        normalise_token,
    )
    from fedswarm.learning.fedmkt.distill import (
        ExampleTargets,
        PeerExample,
        SparseTargets,
        collate_targets,
        example_targets,
        fedmkt_loss,
        sparse_distillation_loss,
    )
    from fedswarm.learning.fedmkt.knowledge import (
        ExampleKnowledge,
        PublicKnowledge,
        compute_public_knowledge,
    )
    from fedswarm.learning.fedmkt.support import (
        PublicSupport,
        SupportAverage,
        build_public_support,
        check_average,
        support_vector,
        teacher_knowledge,
    )
    from fedswarm.learning.fedmkt.trainer import (
        DistillStats,
        accept_peer_knowledge,
        build_example_targets,
        distill,
        evaluate_lm_loss,
        train_causal_lm,
    )
    from fedswarm.learning.fedmkt.vocab_mapping import (
        VocabMapping,
        VocabMappingCache,
        build_vocab_mapping,
    )

_LAZY = {
    "TokenAlignment": "alignment",
    "align_tokens": "alignment",
    "dtw_path": "alignment",
    "BoundaryStyle": "boundary",
    "TokenizerCard": "boundary",
    "detect_boundary_style": "boundary",
    "normalise_token": "boundary",
    "ExampleTargets": "distill",
    "PeerExample": "distill",
    "SparseTargets": "distill",
    "collate_targets": "distill",
    "example_targets": "distill",
    "fedmkt_loss": "distill",
    "sparse_distillation_loss": "distill",
    "ExampleKnowledge": "knowledge",
    "PublicKnowledge": "knowledge",
    "compute_public_knowledge": "knowledge",
    "PublicSupport": "support",
    "SupportAverage": "support",
    "build_public_support": "support",
    "check_average": "support",
    "support_vector": "support",
    "teacher_knowledge": "support",
    "DistillStats": "trainer",
    "accept_peer_knowledge": "trainer",
    "build_example_targets": "trainer",
    "distill": "trainer",
    "evaluate_lm_loss": "trainer",
    "train_causal_lm": "trainer",
    "VocabMapping": "vocab_mapping",
    "VocabMappingCache": "vocab_mapping",
    "build_vocab_mapping": "vocab_mapping",
}


def __getattr__(name: str) -> Any:
    return import_lazily(__name__, _LAZY, globals(), name)


class _Package(types.ModuleType):
    """Keeps an exported name from being hidden by the submodule of the same name.

    ``distill`` is both a function (from ``trainer``) and a submodule; importing the
    submodule sets the package attribute to the module. The eager imports this file
    used to make ran ``trainer``'s last, so the function won; with lazy names the
    submodule would win, and FedMKT rounds called a module ("'module' object is not
    callable"). So a submodule never replaces an exported name here.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "BoundaryStyle",
    "DistillStats",
    "ExampleKnowledge",
    "ExampleTargets",
    "FedMKTError",
    "FedMKTSettings",
    "KnowledgeError",
    "KnowledgeFormatError",
    "KnowledgeNonFiniteError",
    "KnowledgePublicSetMismatchError",
    "KnowledgeShapeError",
    "KnowledgeVocabRangeError",
    "PeerExample",
    "PublicDataError",
    "PublicDataHashMismatchError",
    "PublicDataset",
    "PublicKnowledge",
    "PublicSupport",
    "SparseTargets",
    "SupportAverage",
    "SupportAverageError",
    "TokenAlignment",
    "TokenizerCard",
    "UnsupportedTokenizerError",
    "VocabMapping",
    "VocabMappingCache",
    "VocabMappingCacheError",
    "accept_peer_knowledge",
    "align_tokens",
    "build_example_targets",
    "build_public_support",
    "build_vocab_mapping",
    "check_average",
    "collate_targets",
    "compute_public_knowledge",
    "content_sha256",
    "detect_boundary_style",
    "distill",
    "dtw_path",
    "evaluate_lm_loss",
    "example_targets",
    "fedmkt_loss",
    "load_public_dataset",
    "normalise_token",
    "sparse_distillation_loss",
    "support_vector",
    "teacher_knowledge",
    "train_causal_lm",
]
