"""learning.cpu_precision: bf16 on a CPU without native bf16 is named, nothing else is."""

from __future__ import annotations

from pathlib import Path

import torch
from fedswarm.learning.cpu_precision import cpu_flags, slow_bf16_warning

CPU = torch.device("cpu")
ZEN3_FLAGS = {"sse4_2", "avx", "avx2", "fma"}


def test_bf16_on_a_cpu_without_native_bf16_is_warned_about() -> None:
    message = slow_bf16_warning(CPU, torch.bfloat16, ZEN3_FLAGS)
    assert message is not None
    assert "bfloat16" in message and "auto" in message


def test_native_bf16_fp32_a_gpu_or_unknown_flags_say_nothing() -> None:
    assert slow_bf16_warning(CPU, torch.bfloat16, ZEN3_FLAGS | {"avx512_bf16"}) is None
    assert slow_bf16_warning(CPU, torch.bfloat16, ZEN3_FLAGS | {"amx_bf16"}) is None
    assert slow_bf16_warning(CPU, torch.float32, ZEN3_FLAGS) is None
    assert slow_bf16_warning(torch.device("cuda", 0), torch.bfloat16, ZEN3_FLAGS) is None
    assert slow_bf16_warning(CPU, torch.bfloat16, None) is None


def test_cpu_flags_reads_the_first_flags_line(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\n\nflags\t\t: fpu\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") is None
    (tmp_path / "arm").write_text("Features\t: fp asimd\n")
    assert cpu_flags(tmp_path / "arm") is None
