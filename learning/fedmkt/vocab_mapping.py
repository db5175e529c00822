"""Map a peer's vocabulary into ours, once per tokenizer pair, cached on disk.

A peer's top-k lists token ids of *its* vocabulary. Each is mapped to the own token
whose canonical spelling (see :mod:`boundary`) is equal, else to the own token at the
smallest edit distance. The nearest-token search is bounded: candidates are first
restricted to own tokens with the same word-start flag and first character, and only
when that bucket is empty is the whole vocabulary searched (rapidfuzz, in C++).
"""

from __future__ import annotations

import io
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fedswarm.learning.fedmkt.boundary import TokenizerCard
from fedswarm.learning.fedmkt.errors import VocabMappingCacheError
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

MAPPING_FORMAT_VERSION = 1


@dataclass(frozen=True)
class VocabMapping:
    """``peer_to_own[i]`` is the own token id for peer token id ``i``."""

    peer_to_own: np.ndarray  # [V_peer] int32
    exact: np.ndarray  # [V_peer] bool, True where the canonical strings were equal
    peer_sha256: str
    own_sha256: str

    def map_ids(self, peer_ids: np.ndarray) -> np.ndarray:
        """Own ids for an array of peer ids (any shape)."""
        return self.peer_to_own[peer_ids]



def _bucket_key(text: str) -> tuple[bool, str]:
    """Word-start flag and first content character: the candidate pre-filter."""
    starts_word = text.startswith(" ")
    content = text.lstrip(" ")
    return starts_word, content[:1]


def build_vocab_mapping(peer: TokenizerCard, own: TokenizerCard) -> VocabMapping:
    """Compute the mapping from ``peer`` token ids to ``own`` token ids."""
    own_norm = own.normalised()
    peer_norm = peer.normalised()
    first_id: dict[str, int] = {}
    for own_id, text in enumerate(own_norm):
        first_id.setdefault(text, own_id)
    buckets: dict[tuple[bool, str], list[int]] = defaultdict(list)
    for own_id, text in enumerate(own_norm):
        buckets[_bucket_key(text)].append(own_id)

    peer_to_own = np.zeros(len(peer_norm), dtype=np.int32)
    exact = np.zeros(len(peer_norm), dtype=bool)
    for peer_id, text in enumerate(peer_norm):
        match = first_id.get(text)
        if match is not None:
            peer_to_own[peer_id] = match
            exact[peer_id] = True
            continue
        candidates = buckets.get(_bucket_key(text)) or range(len(own_norm))
        peer_to_own[peer_id] = _nearest(text, candidates, own_norm)
    return VocabMapping(
        peer_to_own=peer_to_own, exact=exact, peer_sha256=peer.sha256(), own_sha256=own.sha256()
    )


def _nearest(text: str, candidates: list[int] | range, own_norm: list[str]) -> int:
    """Own id with the smallest Levenshtein distance to ``text`` (lowest id on ties)."""
    choices = [own_norm[i] for i in candidates]
    best = process.extractOne(text, choices, scorer=Levenshtein.distance)
    if best is None:
        return int(candidates[0])
    return int(candidates[best[2]])


class VocabMappingCache:
    """Mappings stored as ``.npz`` files keyed by both vocabularies' hashes.

    A corrupt or foreign cache file is rebuilt, never trusted: it is only a cache.
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def path_for(self, peer_sha256: str, own_sha256: str) -> Path:
        name = f"vocabmap-v{MAPPING_FORMAT_VERSION}-{peer_sha256[:24]}-{own_sha256[:24]}.npz"
        return self.directory / name

    def get_or_build(self, peer: TokenizerCard, own: TokenizerCard) -> VocabMapping:
        peer_sha, own_sha = peer.sha256(), own.sha256()
        path = self.path_for(peer_sha, own_sha)
        if path.exists():
            try:
                return self.load(path, peer_sha, own_sha, len(peer), len(own))
            except VocabMappingCacheError:
                pass  # rebuild below and overwrite the bad file
        mapping = build_vocab_mapping(peer, own)
        self.store(path, mapping)
        return mapping

    @staticmethod
    def load(
        path: Path, peer_sha256: str, own_sha256: str, peer_size: int, own_size: int
    ) -> VocabMapping:
        """Read and check one cache file."""
        try:
            with np.load(path, allow_pickle=False) as archive:
                peer_to_own = np.asarray(archive["peer_to_own"])
                exact = np.asarray(archive["exact"])
                keys = bytes(archive["keys"]).decode("ascii")
        except Exception as exc:  # any unreadable file is just a cache miss
            raise VocabMappingCacheError(f"unreadable vocabulary mapping {path}: {exc}") from exc
        if keys != f"{peer_sha256}:{own_sha256}":
            raise VocabMappingCacheError(f"{path} belongs to other vocabularies")
        if peer_to_own.shape != (peer_size,) or exact.shape != (peer_size,):
            raise VocabMappingCacheError(f"{path} has the wrong shape")
        if peer_to_own.dtype != np.int32 or exact.dtype != np.bool_:
            raise VocabMappingCacheError(f"{path} has the wrong dtypes")
        if peer_size and (peer_to_own.min() < 0 or peer_to_own.max() >= own_size):
            raise VocabMappingCacheError(f"{path} maps outside the own vocabulary")
        return VocabMapping(
            peer_to_own=peer_to_own, exact=exact, peer_sha256=peer_sha256, own_sha256=own_sha256
        )

    def store(self, path: Path, mapping: VocabMapping) -> None:
        """Write atomically (temp file + rename) so a crash never leaves half a file."""
        self.directory.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        keys = f"{mapping.peer_sha256}:{mapping.own_sha256}".encode("ascii")
        np.savez(
            buffer,
            peer_to_own=mapping.peer_to_own,
            exact=mapping.exact,
            keys=np.frombuffer(keys, dtype=np.uint8),
        )
        handle, tmp_name = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(buffer.getvalue())
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
