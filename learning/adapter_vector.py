"""Adapter state ⇄ one flat float32 vector, for secure aggregation.

Secure aggregation works on a single vector of numbers; the daemon flattens each
peer's adapter with a manifest (names and shapes, in sorted order) and turns the
averaged vector back into tensors. The manifest is part of what peers must agree on.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from fedswarm.learning.errors import LearningError

Manifest = list[tuple[str, tuple[int, ...]]]


def flatten_state(state: dict[str, torch.Tensor]) -> tuple[np.ndarray, Manifest]:
    """Concatenate tensors in sorted-name order into a float32 vector."""
    manifest: Manifest = []
    parts: list[np.ndarray] = []
    for name in sorted(state):
        tensor = state[name].detach().to("cpu", torch.float32)
        manifest.append((name, tuple(int(d) for d in tensor.shape)))
        parts.append(tensor.reshape(-1).numpy())
    vector = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return vector.astype(np.float32, copy=False), manifest


def unflatten_state(vector: np.ndarray, manifest: Manifest) -> dict[str, torch.Tensor]:
    """Inverse of ``flatten_state``; ``LearningError`` if the vector length is wrong."""
    sizes = [int(np.prod(shape, dtype=np.int64)) for _, shape in manifest]
    flat = np.asarray(vector)
    if flat.ndim != 1 or flat.shape[0] != sum(sizes):
        raise LearningError(f"vector has shape {flat.shape}, manifest needs ({sum(sizes)},)")
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for (name, shape), size in zip(manifest, sizes, strict=True):
        chunk = flat[offset:offset + size].astype(np.float32, copy=True)
        out[name] = torch.from_numpy(chunk).reshape(shape)
        offset += size
    return out


def state_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """Short sha256 of names, shapes and values: equal adapters, equal fingerprints."""
    vector, manifest = flatten_state(state)
    return vector_fingerprint(vector, manifest)


def vector_fingerprint(vector: np.ndarray, manifest: Manifest) -> str:
    """``state_fingerprint`` of the state ``vector`` stands for, without building it.

    Catch-up checks a pulled adapter against the fingerprint a quorum advertises
    before loading it, so a wrong one never touches the model.
    """
    h = hashlib.sha256(repr(manifest).encode("utf-8"))
    h.update(np.ascontiguousarray(vector, dtype="<f4").tobytes())
    return h.hexdigest()[:16]
