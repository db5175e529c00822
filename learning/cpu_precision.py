"""Say when a model placed in bf16 on a CPU will train orders of magnitude slower.

``[model] dtype = "auto"`` picks fp32 on a CPU, so only an explicit ``bfloat16`` gets
here. On an x86 CPU without native bf16 instructions (AVX512-BF16 or AMX) PyTorch's
bf16 matrix products fall back to slow paths, and the one backward needs through a
frozen output head is the worst of them: bench.shape_round measured 603–609 s for one
training step of a 1-layer Llama-3.2-1B shape (batch 1, 32 tokens) in bf16, where the
same step in fp32 took seconds (docs/performance.md, 2026-12-04 real-shape rounds).
A daemon that silently takes ten minutes a step looks hung, so the daemon logs this.
"""

from __future__ import annotations

from pathlib import Path

import torch

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""/proc/cpuinfo flags of x86 CPUs whose bf16 matrix products run at full speed."""


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The first CPU's flags, or None where /proc/cpuinfo does not say (not Linux x86)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def slow_bf16_warning(
    device: torch.device, dtype: torch.dtype, flags: set[str] | None
) -> str | None:
    """A warning for bf16 on a CPU whose flags show no native bf16, else None.

    ``flags`` None (unknown: ARM, macOS) says nothing rather than guess.
    """
    if device.type != "cpu" or dtype != torch.bfloat16 or flags is None:
        return None
    if any(flag in flags for flag in NATIVE_BF16_FLAGS):
        return None
    return (
        '[model] dtype = "bfloat16" on a CPU without native bf16 (no '
        + " / ".join(NATIVE_BF16_FLAGS)
        + "): training steps can take minutes instead of "
        "seconds (the backward through the output head falls back to a slow path); "
        'dtype = "auto" (fp32 on a CPU) trains far faster at twice the weight memory'
    )
