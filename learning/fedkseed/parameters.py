"""Which weights FedKSeed tunes, in which order, and their hashes.

Every member must walk the same tensors in the same order (sorted by name) for a
direction to mean the same thing everywhere. ``trainable = "no_embeddings"`` leaves the
input embedding (and a head tied to it) alone: on a large vocabulary it is most of a
small model's weights and most of a replay's cost.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from .settings import Trainable


@dataclass(frozen=True)
class TunedTensor:
    """One tuned tensor: its name, its index in the walk (a direction's key) and itself."""

    name: str
    index: int
    param: torch.nn.Parameter


def tuned_tensors(model: torch.nn.Module, trainable: Trainable) -> list[TunedTensor]:
    """The tensors FedKSeed moves, sorted by name (tied weights appear once)."""
    skip: set[int] = set()
    if trainable == "no_embeddings":
        embedding = model.get_input_embeddings()  # type: ignore[operator]
        skip.add(id(embedding.weight))
    named = sorted(
        ((n, p) for n, p in model.named_parameters() if id(p) not in skip), key=lambda item: item[0]
    )
    return [TunedTensor(name, index, param) for index, (name, param) in enumerate(named)]


def _digest(model: torch.nn.Module, names: list[str] | None = None) -> hashlib._Hash:
    h = hashlib.sha256(b"fedswarm/fedkseed/parameters/v1")
    params = dict(model.named_parameters())
    for name in sorted(params) if names is None else names:
        tensor = params[name].detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(tensor.shape)}\n".encode())
        h.update(tensor.numpy().astype("<f4", copy=False).tobytes())
    return h


def base_model_sha256(model: torch.nn.Module) -> str:
    """sha256 of every parameter (names, shapes, fp32 values): what ``[fedkseed]
    base_model_sha256`` pins, independent of how the weights are stored on disk."""
    return _digest(model).hexdigest()


def parameters_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of every parameter: equal on two members iff their models are."""
    return _digest(model).hexdigest()[:16]
