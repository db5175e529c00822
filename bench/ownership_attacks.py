"""What the ownership benchmark does to a federated model: export, steal, prune, evaluate.

Every attack works on the *exported, merged* model (LoRA merged into the weights, the
norm scales' deltas folded into the scales): what leaves the consortium and what a
thief holds. Nothing here knows the marks; verification is ``learning.ownership``'s.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from fedswarm.learning.dataset import prepare_data
from fedswarm.learning.examples import IGNORE_INDEX, BatchStream, Example, eval_batches
from fedswarm.learning.settings import DataSettings
from fedswarm.learning.trainer import LocalTrainer
from peft import LoraConfig, PeftModel, get_peft_model
from torch.nn.utils import parametrize
from transformers import PreTrainedTokenizerBase


def export_merged(trainer: LocalTrainer) -> torch.nn.Module:
    """A plain model (no PEFT, no parametrizations) equal to what ``trainer`` computes."""
    model = copy.deepcopy(trainer.model)
    assert isinstance(model, PeftModel)
    merged = model.merge_and_unload()
    for module in merged.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    for p in merged.parameters():
        p.requires_grad_(False)
    merged.eval()
    return merged


def load_examples(path: Path, tokenizer: PreTrainedTokenizerBase, max_length: int,
                  seed: int) -> list[Example]:
    """Tokenised examples of one JSONL file, as a trainer would make them."""
    return prepare_data(DataSettings(str(path), str(path), max_length=max_length),
                        tokenizer, seed).train


@torch.no_grad()
def mean_loss(model: torch.nn.Module, examples: list[Example], pad_id: int,
              batch_size: int = 8) -> float:
    """Token-weighted loss over ``examples`` (what ``LocalTrainer.evaluate`` computes)."""
    model.eval()
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for batch in eval_batches(examples, batch_size, pad_id, None):
        batch = {k: v.to(device) for k, v in batch.items()}
        n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        if n:
            total += float(model(**batch).loss) * n
            count += n
    return total / count


@dataclass(frozen=True)
class Theft:
    """How the thief fine-tunes: which weights, at what rate, for how long."""

    name: str
    trainable: str  # "all" (full fine-tuning) or "lora+norms" (what fedswarm itself trains)
    lr: float
    steps: int = 200
    batch_size: int = 8


def steal(model: torch.nn.Module, theft: Theft, examples: list[Example], pad_id: int,
          seed: int, lora_targets: list[str]) -> torch.nn.Module:
    """A fine-tuned copy of ``model`` on the thief's own domain; the result is merged again."""
    thief = copy.deepcopy(model)
    if theft.trainable == "all":
        for p in thief.parameters():
            p.requires_grad_(True)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            thief = get_peft_model(thief, LoraConfig(r=8, lora_alpha=16,  # type: ignore[arg-type]
                                                     target_modules=lora_targets,
                                                     task_type="CAUSAL_LM"))
        for name, p in thief.named_parameters():
            if "norm" in name:
                p.requires_grad_(True)
    params = [p for p in thief.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=theft.lr, weight_decay=0.0)
    stream = BatchStream(examples, theft.batch_size, seed, pad_id)
    device = next(thief.parameters()).device
    thief.train()
    for _ in range(theft.steps):
        batch = {k: v.to(device) for k, v in stream.next_batch().items()}
        thief(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if isinstance(thief, PeftModel):
        thief = thief.merge_and_unload()
    for p in thief.parameters():
        p.requires_grad_(False)
    thief.eval()
    return thief


@torch.no_grad()
def prune(model: torch.nn.Module, fraction: float) -> torch.nn.Module:
    """Global unstructured magnitude pruning: the ``fraction`` smallest |w| of all weights → 0."""
    pruned = copy.deepcopy(model)
    params = [p for p in pruned.parameters() if p.is_floating_point()]
    magnitudes = torch.cat([p.detach().abs().float().reshape(-1).cpu() for p in params])
    k = max(1, int(fraction * magnitudes.numel()))
    threshold = torch.kthvalue(magnitudes, k).values
    for p in params:
        p.mul_((p.abs() > threshold.to(p.device)).to(p.dtype))
    return pruned
