"""Token-weighted eval loss of any causal LM on prepared examples.

The benchmark compares four models (full, emulator, tuned emulator, plugged-in full) on
the same union eval set; one function keeps the four numbers comparable.
"""

from __future__ import annotations

import math

import torch
from fedswarm.learning.errors import LearningError
from fedswarm.learning.examples import IGNORE_INDEX, Example, eval_batches
from fedswarm.learning.trainer import EvalReport


@torch.no_grad()
def evaluate_loss(
    model: torch.nn.Module,
    examples: list[Example],
    batch_size: int,
    pad_id: int,
    max_batches: int | None = None,
) -> EvalReport:
    """Mean loss per predicted token over fixed, unshuffled batches."""
    if not examples:
        raise LearningError("no eval data to evaluate on")
    was_training = model.training
    model.eval()
    device = model.get_input_embeddings().weight.device  # type: ignore[operator]
    total, count = 0.0, 0
    try:
        for batch in eval_batches(examples, batch_size, pad_id, max_batches):
            batch = {k: v.to(device) for k, v in batch.items()}
            n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            if n:
                total += float(model(**batch).loss) * n
                count += n
    finally:
        model.train(was_training)
    if count == 0:
        raise LearningError("eval data has no tokens to predict")
    return EvalReport(
        loss=total / count, perplexity=math.exp(min(total / count, 700.0)), tokens=count
    )
