"""One DP-SGD gradient: Poisson-sampled examples, per-example clipping, Gaussian noise.

This is Abadi et al.'s DP-SGD as Opacus implements it (Poisson sampling, clip each
example's gradient to ``C``, add N(0, σ²C²) to the sum, divide by the *expected* batch
size), written out so the trainer's loop stays readable top to bottom:

* per-example gradients of the trainable (adapter) parameters come from
  ``torch.func.vmap`` over the batch for LoRA, and from one backward pass per example
  for LoHa and LoKr, whose module dropout draws a Python-level random number that vmap
  cannot batch (both give the exact gradient of each example's own loss);
* each example's loss is the mean over *its own* predicted tokens, so one example's
  gradient never depends on another's length (Hugging Face's batch loss divides by the
  batch's token count, which would couple them);
* vmap runs without an attention mask: batches are right-padded, so under causal
  attention no real token ever sees a pad and the loss equals the masked one; the
  per-example loop trims each example to its length instead;
* the noise generator is seeded from the operating system (``secrets``), never from
  ``train.seed``: anyone who knows the seed in a config file could otherwise subtract
  the noise. So are the Poisson draws: amplification by sampling assumes the batch
  is secret.
"""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from fedswarm.learning.examples import IGNORE_INDEX, Example, collate
from torch.func import functional_call, grad_and_value, vmap

Params = list[tuple[str, torch.nn.Parameter]]


@dataclass
class ClippedSum:
    """Sum of clipped per-example gradients over one logical batch, before noise."""

    grads: dict[str, torch.Tensor]
    losses: list[float]
    tokens: int
    examples: int


class PoissonSampler:
    """Each example joins each logical batch independently with probability ``rate``.

    That is the sampling Opacus's accountant assumes; a shuffled fixed-size batch would
    need a different (and weaker) analysis.
    """

    def __init__(self, examples: int, rate: float) -> None:
        self.examples = examples
        self.rate = rate
        self._rng = np.random.default_rng(secrets.randbits(128))

    def sample(self) -> list[int]:
        return np.flatnonzero(self._rng.random(self.examples) < self.rate).tolist()


def _chunks(indices: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(indices), size):
        yield indices[start:start + size]


def _example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss over one example's labelled tokens (0 if it has none)."""
    shifted = labels[..., 1:]
    per_token = torch.nn.functional.cross_entropy(
        logits[..., :-1, :].float().reshape(-1, logits.shape[-1]), shifted.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="sum")
    return per_token / (shifted != IGNORE_INDEX).sum().clamp(min=1)


class PerExampleGradients:
    """Per-example gradients of each example's own loss w.r.t. the trainable parameters."""

    def __init__(self, model: torch.nn.Module, trainable: Params, vectorised: bool) -> None:
        self.model = model
        self.trainable = trainable
        self.vectorised = vectorised

        def loss(params: dict[str, torch.Tensor], ids: torch.Tensor,
                 labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = functional_call(model, params, (), {"input_ids": ids[None], "use_cache": False})
            value = _example_loss(out.logits[0], labels)
            return value, value

        self._batched = vmap(grad_and_value(loss, has_aux=True), in_dims=(None, 0, 0),
                             randomness="different")

    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor],
                                                                torch.Tensor]:
        """``({name: [B, *shape]}, losses[B])`` for a right-padded batch."""
        mask = batch["attention_mask"]
        lengths = mask.sum(dim=1)
        if not bool((mask.cumsum(dim=1).amax(dim=1) == lengths).all()) or \
                not bool((mask[:, :1] == 1).all()):
            raise ValueError("DP-SGD needs right-padded batches (examples.collate makes them)")
        if self.vectorised:
            params = {n: p.detach() for n, p in self.trainable}
            with warnings.catch_warnings():
                # SDPA has no vmap batching rule yet: torch loops over the batch inside
                # attention and says so on every call (measured: still faster than a loop
                # over examples; docs/privacy.md).
                warnings.filterwarnings("ignore", message="There is a performance drop")
                grads, (losses, _) = self._batched(params, batch["input_ids"], batch["labels"])
            return grads, losses.detach()
        return self._one_by_one(batch, lengths)

    def _one_by_one(self, batch: dict[str, torch.Tensor],
                    lengths: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        per_name: dict[str, list[torch.Tensor]] = {n: [] for n, _ in self.trainable}
        losses = []
        params = [p for _, p in self.trainable]
        for i, n in enumerate(lengths.tolist()):
            ids = batch["input_ids"][i:i + 1, :n]
            value = _example_loss(self.model(input_ids=ids, use_cache=False).logits[0],
                                  batch["labels"][i, :n])
            grads = torch.autograd.grad(value, params, allow_unused=True)
            for (name, p), g in zip(self.trainable, grads, strict=True):
                per_name[name].append(torch.zeros_like(p) if g is None else g)
            losses.append(value.detach())
        return {n: torch.stack(gs) for n, gs in per_name.items()}, torch.stack(losses)


def clipped_sum(per_example: PerExampleGradients, examples: list[Example], indices: list[int],
                physical_batch: int, pad_id: int, max_grad_norm: float,
                device: torch.device) -> ClippedSum:
    """Clip each sampled example's gradient to ``max_grad_norm`` and add them up.

    The logical batch is processed ``physical_batch`` examples at a time (memory); the
    result is the same as one pass, which is what makes gradient accumulation free here.
    """
    sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in per_example.trainable}
    losses: list[float] = []
    tokens = 0
    for chunk in _chunks(indices, physical_batch):
        batch = {k: v.to(device) for k, v in collate([examples[i] for i in chunk],
                                                     pad_id).items()}
        grads, chunk_losses = per_example(batch)
        norms = torch.stack([g.reshape(g.shape[0], -1).float().norm(dim=1)
                             for g in grads.values()], dim=1).norm(dim=1)
        scale = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        for name, g in grads.items():
            sums[name] += torch.einsum("b,b...->...", scale, g.float())
        losses.extend(chunk_losses.float().tolist())
        tokens += int(batch["attention_mask"].sum())
    return ClippedSum(sums, losses, tokens, len(indices))


class GaussianNoise:
    """N(0, (σ·C)²) per coordinate, from a generator seeded by the operating system."""

    def __init__(self, noise_multiplier: float, max_grad_norm: float,
                 device: torch.device) -> None:
        self.std = noise_multiplier * max_grad_norm
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(secrets.randbits(63))

    def like(self, tensor: torch.Tensor) -> torch.Tensor:
        noise = torch.normal(0.0, self.std, size=tuple(tensor.shape), generator=self.generator,
                             device=self.generator.device, dtype=torch.float32)
        return noise.to(tensor.device)
