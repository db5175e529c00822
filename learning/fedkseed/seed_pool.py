"""The federation's pool of K seeds, derived so every member computes the same one.

Nothing is exchanged to agree on it: each seed is the first 8 bytes of BLAKE2b over
the federation id, the base model's hash, K and the seed's index. Tying the pool to
the base model means two federations (or one federation after a base-model change)
never read each other's scalars as steps along the same directions.
"""

from __future__ import annotations

import hashlib

import numpy as np

_DOMAIN = b"fedswarm/fedkseed/seed-pool/v1"


def seed_pool(federation_id: str, base_model_sha256: str, k: int) -> np.ndarray:
    """K 64-bit seeds (``uint64``), index j naming direction z_j."""
    if k < 1:
        raise ValueError("k: must be >= 1")
    prefix = b"|".join(
        [
            _DOMAIN,
            federation_id.encode("utf-8"),
            base_model_sha256.encode("ascii"),
            str(k).encode("ascii"),
        ]
    )
    seeds = np.empty(k, dtype=np.uint64)
    for j in range(k):
        digest = hashlib.blake2b(prefix + b"|" + str(j).encode("ascii"), digest_size=8).digest()
        seeds[j] = np.frombuffer(digest, dtype="<u8")[0]
    return seeds
