"""Distilling the emulator: only the kept middle layers move, towards the full model's middle."""

from __future__ import annotations

from pathlib import Path

import torch
from fedswarm.learning.demo_assets import demo_data_dir
from fedswarm.learning.offsite import OffsitePackage
from fedswarm.learning.offsite.distill import distill_middle, text_blocks
from fedswarm.learning.offsite.settings import DistillSettings
from transformers import AutoModelForCausalLM, AutoTokenizer


def _gap(
    teacher: torch.nn.Module,
    emulator: torch.nn.Module,
    package: OffsitePackage,
    batch: torch.Tensor,
) -> float:
    layout = package.layout
    with torch.no_grad():
        want = teacher(input_ids=batch, output_hidden_states=True).hidden_states[
            layout.total - layout.top
        ]
        got = emulator(input_ids=batch, output_hidden_states=True).hidden_states[
            layout.bottom + layout.keep
        ]
    return float(torch.nn.functional.mse_loss(got, want))


def test_distillation_moves_only_the_middle_and_closes_the_gap(
    deep_model_dir: Path, package: OffsitePackage
) -> None:
    torch.manual_seed(0)
    teacher = AutoModelForCausalLM.from_pretrained(deep_model_dir, dtype=torch.float32)
    emulator = AutoModelForCausalLM.from_pretrained(package.path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(package.path)
    texts = (demo_data_dir() / "generic.jsonl").read_text().splitlines()[:200]
    blocks = text_blocks(tokenizer, texts, 32)
    before = {n: p.clone() for n, p in emulator.named_parameters()}
    gap_before = _gap(teacher, emulator, package, blocks[:8])
    distill_middle(
        teacher,
        emulator,
        package.layout,
        blocks,
        DistillSettings(steps=15, lr=3e-3, batch_size=4, seq_len=32),
    )
    assert _gap(teacher, emulator, package, blocks[:8]) < gap_before
    changed = {n for n, p in emulator.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith(("model.layers.2.", "model.layers.3.")) for n in changed)
    assert all(p.requires_grad for p in emulator.parameters())  # flags restored
