"""Optional distillation of the emulator's middle layers towards the full model's middle.

Offsite-tuning's paper (Xiao et al. 2023, section 3.2) distils the compressed middle so
that adapters tuned on the emulator still fit the full model when plugged back in:
without it the adapters learn to work around the dropped layers, and part of what they
learn is lost in the full model. The owner runs this before publishing, on text of its
own choosing (public or its own; members never see it): the kept middle layers learn to
map the bottom adapters' output to what the full model's middle produces, by mean
squared error on that hidden state. The adapters, embeddings and head stay as they are.
"""

from __future__ import annotations

import torch
from fedswarm.learning.errors import OffsiteError
from fedswarm.learning.offsite.layers import decoder_layers
from fedswarm.learning.offsite.layout import OffsiteLayout
from fedswarm.learning.offsite.settings import DistillSettings
from transformers import PreTrainedTokenizerBase


def text_blocks(tokenizer: PreTrainedTokenizerBase, texts: list[str], seq_len: int) -> torch.Tensor:
    """The texts packed into ``seq_len``-token blocks (bos/eos between documents)."""
    ids: list[int] = []
    for encoded in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids += [tokenizer.bos_token_id, *encoded, tokenizer.eos_token_id]
    n_blocks = len(ids) // seq_len
    if n_blocks == 0:
        raise OffsiteError(
            f"distillation text has {len(ids)} tokens, fewer than one block of {seq_len}"
        )
    return torch.tensor(ids[: n_blocks * seq_len]).view(n_blocks, seq_len)


def distill_middle(
    teacher: torch.nn.Module,
    emulator: torch.nn.Module,
    layout: OffsiteLayout,
    blocks: torch.Tensor,
    settings: DistillSettings,
) -> float:
    """Train the emulator's kept middle layers to reproduce the teacher's middle output.

    Returns the last step's loss (``nan`` for zero steps). The emulator's other
    parameters are left untouched, and its ``requires_grad`` flags restored.
    """
    middle = decoder_layers(emulator)[layout.bottom : layout.bottom + layout.keep]
    params = [p for p in middle.parameters()]
    flags = {id(p): p.requires_grad for p in emulator.parameters()}
    for p in emulator.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    teacher.eval()
    emulator.train()
    optimiser = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(settings.seed)
    loss = torch.tensor(float("nan"))
    try:
        for _ in range(settings.steps):
            batch = blocks[torch.randint(0, len(blocks), (settings.batch_size,), generator=gen)]
            with torch.no_grad():
                target = teacher(input_ids=batch, output_hidden_states=True).hidden_states[
                    layout.total - layout.top
                ]
            got = emulator(input_ids=batch, output_hidden_states=True).hidden_states[
                layout.bottom + layout.keep
            ]
            loss = torch.nn.functional.mse_loss(got, target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)
    finally:
        emulator.eval()
        for p in emulator.parameters():
            p.requires_grad_(flags[id(p)])
    return float(loss.detach())
