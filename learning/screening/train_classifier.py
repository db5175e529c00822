"""Train a small sequence classifier from labelled rows, locally (tests, the benchmark).

The screen takes any ``AutoModelForSequenceClassification`` folder; an organisation would
point it at a safety classifier it trusts. Tests and ``bench/safety.py`` cannot download
one, so they build a tiny Llama classifier on the demo model's tokenizer from labelled
examples here, and save it the way ``from_pretrained`` reads it back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification


@dataclass(frozen=True)
class ClassifierRecipe:
    """Size and training of the small classifier."""

    hidden_size: int = 64
    layers: int = 1
    steps: int = 120
    batch_size: int = 16
    lr: float = 3e-3
    max_length: int = 96
    seed: int = 0


def train_text_classifier(
    texts: list[str],
    labels: list[int],
    label_names: list[str],
    tokenizer_dir: Path,
    out_dir: Path,
    recipe: ClassifierRecipe | None = None,
) -> Path:
    """Train on ``texts``/``labels`` (indices into ``label_names``); save into ``out_dir``."""
    recipe = recipe or ClassifierRecipe()
    if len(texts) != len(labels) or not texts:
        raise ValueError("texts and labels must be non-empty and of equal length")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.hidden_size * 2,
        num_hidden_layers=recipe.layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=max(256, recipe.max_length),
        pad_token_id=tokenizer.pad_token_id,
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        architectures=["LlamaForSequenceClassification"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = LlamaForSequenceClassification(config)
    order = list(range(len(texts)))
    rng = random.Random(recipe.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr)
    model.train()
    cursor = len(order)
    for _ in range(recipe.steps):
        if cursor + recipe.batch_size > len(order):
            rng.shuffle(order)
            cursor = 0
        chosen = order[cursor : cursor + recipe.batch_size]
        cursor += recipe.batch_size
        batch = tokenizer(
            [texts[i] for i in chosen],
            padding=True,
            truncation=True,
            max_length=recipe.max_length,
            return_tensors="pt",
        )
        out = model(**batch, labels=torch.tensor([labels[i] for i in chosen]))
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir
