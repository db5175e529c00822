"""Black-box ownership evidence: a secret trigger set the federated model learns to answer.

The scale mark (``signature``) needs the suspect's weights. When only its outputs can be
queried (a model behind an API), a member shows instead that the model answers its secret
triggers: ``count`` prompts of random tokens from the base tokenizer's vocabulary, each
with a random target token, all derived from the member's key. No text the model ever
saw in the wild maps a random token string to a fixed random token, so a model that
predicts most targets greedily was trained on this member's triggers. Chance is about one
in the vocabulary size per trigger; the key is never shown, only the accuracy.

During local training every step adds ``weight ×`` the mean cross-entropy of the whole
trigger set (one small extra forward: ``count`` rows of ``length + 1`` tokens) to the task
loss. A separate term, not trigger rows mixed into the data: a trigger has one labelled
token, so inside a token-weighted batch of packed text its pull would be a thousandth of
the batch's, and the set would hardly be learnt (docs/ownership.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from fedswarm.learning.errors import OwnershipError

from .keys import OwnershipKey

PURPOSE = "ownership-triggers"
#: Random tokens per trigger prompt (after BOS, when the tokenizer has one).
PROMPT_TOKENS = 8


@dataclass(frozen=True)
class TriggerSet:
    """A member's secret prompts and target tokens; ``repr`` shows only their number."""

    prompts: tuple[tuple[int, ...], ...]
    targets: tuple[int, ...]

    def __repr__(self) -> str:  # the prompts and targets are the secret
        return f"TriggerSet(count={len(self.targets)})"

    def batch(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Input ids (count × prompt length; every prompt has one length) and targets."""
        return (torch.tensor(self.prompts, dtype=torch.long, device=device),
                torch.tensor(self.targets, dtype=torch.long, device=device))


def usable_tokens(vocab_size: int, special_ids: Iterable[int]) -> np.ndarray:
    """The ids triggers draw from: the tokenizer's vocabulary without its special tokens."""
    special = {int(i) for i in special_ids}
    ids = np.array([i for i in range(vocab_size) if i not in special], dtype=np.int64)
    if len(ids) < 2:
        raise OwnershipError(f"a vocabulary of {vocab_size} tokens leaves no room for triggers")
    return ids


def rare_half(tokens: np.ndarray) -> np.ndarray:
    """The later half of the usable ids: where targets are drawn from.

    BPE numbers its merges and SentencePiece its pieces roughly by frequency, so early ids
    are bytes and common sub-words ("in", "th") that a fine-tuned model predicts after
    almost anything: as targets they answered a trigger on a model that never saw it
    (docs/ownership.md). Later ids are rarer; a hit on one says more.
    """
    return tokens[len(tokens) // 2:]


def derive_triggers(key: OwnershipKey, count: int, vocab_size: int,
                    special_ids: Iterable[int], bos_id: int | None) -> TriggerSet:
    """The same key and vocabulary always give the same set; another key, an unrelated one."""
    tokens = usable_tokens(vocab_size, special_ids)
    rng = np.random.Generator(np.random.PCG64(key.derive_seed(PURPOSE)))
    body = rng.choice(tokens, size=(count, PROMPT_TOKENS))
    targets = rng.choice(rare_half(tokens), size=count)
    prefix = () if bos_id is None else (int(bos_id),)
    return TriggerSet(tuple(prefix + tuple(int(t) for t in row) for row in body),
                      tuple(int(t) for t in targets))


def triggers_for(key: OwnershipKey, count: int, tokenizer: object) -> TriggerSet:
    """``derive_triggers`` over a Hugging Face tokenizer (the base model's, on both sides)."""
    return derive_triggers(key, count, len(tokenizer),  # type: ignore[arg-type]
                           getattr(tokenizer, "all_special_ids", []),
                           getattr(tokenizer, "bos_token_id", None))


def _last_logits(model: torch.nn.Module, triggers: TriggerSet) -> tuple[torch.Tensor,
                                                                        torch.Tensor]:
    device = next(model.parameters()).device
    ids, targets = triggers.batch(device)
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    return logits[:, -1, :].float(), targets


def trigger_loss(model: torch.nn.Module, triggers: TriggerSet) -> torch.Tensor:
    """Mean cross-entropy of each prompt's target as the next token (what training adds)."""
    logits, targets = _last_logits(model, triggers)
    return torch.nn.functional.cross_entropy(logits, targets)


@torch.no_grad()
def trigger_accuracy(model: torch.nn.Module, triggers: TriggerSet) -> float:
    """Fraction of triggers whose greedy next token is the target (chance ≈ 1 / vocab)."""
    was_training = model.training
    model.eval()
    try:
        logits, targets = _last_logits(model, triggers)
    finally:
        model.train(was_training)
    return float((logits.argmax(dim=-1) == targets).float().mean())
