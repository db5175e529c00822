"""Adapter sizes and bytes per round for real model shapes, built from configs (issue #27).

No weights are downloaded: each model is instantiated from its published dimensions
(hidden size, MLP size, layers, attention and key/value heads, vocabulary) on PyTorch's
``meta`` device, which allocates nothing, and the daemon's own ``attach_adapter`` puts
LoRA on it. The adapter vector is what the daemon averages:
``get_peft_model_state_dict`` flattened (``learning.adapter_vector``), doubled when
AdamW's first moment travels with it (``[federation] average_optimizer_state``, on by
default; ``learning.moment_averaging``). Every count is also checked against
``r * (in + out)`` summed over the adapted Linear layers.

Bytes per member per round, group of k (default 4):

* plain (``secure_aggregation = "none"``): every member sends its vector to the k - 1
  others, 16 header bytes + 4 bytes per value each (``federation.averaging.plain``);
* secure v2 / v3: a member's UPLOAD to the aggregator is
  ``UPLOAD_OVERHEAD + CIPHERTEXT_BYTES * ciphertexts``, the ciphertexts counted from
  the protocol's own packing (``QuantisationGrid.encoded_size``: 1 value per BFV slot
  in v2, 3 in v3, plus the weight slot; 4,096 slots per ciphertext). Both constants were
  fitted exactly (to the byte) on bench.secagg's member replays at 100 k and 1 M values
  for both protocols; ``--measure-max`` re-measures them.

``--measure-values N,M`` also runs ``bench.secagg`` (k, v3) at those vector sizes and
reports member / A / D CPU, each role's peak RSS and the measured upload (which checks
the byte model above); other sizes are left to the 8.8 M / 40 M / 80 M rows in
docs/performance.md (8.8 M is exactly Qwen2.5-0.5B all-linear r16; 40 M and 80 M are
within 5 % of the 7-8 B models' adapter and adapter + exp_avg).

A member's UPLOAD travels as chunk messages of at most 128 ciphertexts (8.4 MB) each,
so no secure message nears p2p's ``max_blob_bytes`` (512 MiB); plain averaging still
sends its whole vector as one blob. ``fits_one_blob`` says whether each scheme's
largest message fits.

    python -m bench.shapes --json shapes.json
    python -m bench.shapes --measure-values 1703936,17596416,22544384 --json shapes.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedswarm.p2p.config import NodeConfig
from fedswarm.secagg.params import PROTOCOL_V2, PROTOCOL_V3, SecAggParams
from fedswarm.secagg.quantise import QuantisationGrid

from . import child_env, module_command
from .machine import cpu_model

CIPHERTEXT_BYTES = 65_671
"""One serialised BFV ciphertext, N = 4096, coefficient primes (60, 49), in an UPLOAD."""
UPLOAD_OVERHEAD = 223
"""One signed UPLOAD chunk message around its ciphertexts (header, chunk index and count,
mask set, signature)."""
CHUNK_CIPHERTEXTS = SecAggParams().stream_chunk_ciphertexts
"""Ciphertexts per UPLOAD chunk message (secagg/chunks.py)."""
PLAIN_HEADER = 16
"""``federation.averaging.plain``: weight (float64) and value count (uint64)."""
SLOTS_PER_CIPHERTEXT = 4096


@dataclass(frozen=True)
class Shape:
    """A published model's dimensions (its config.json), enough to rebuild it empty."""

    name: str
    model_type: str
    config: dict[str, Any]
    attention: tuple[str, ...]
    """Its attention projections (the "attention-only" LoRA targets)."""


ALL_LINEAR_LLAMA = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ATTENTION_LLAMA = ("q_proj", "k_proj", "v_proj", "o_proj")

SHAPES: tuple[Shape, ...] = (
    Shape("Qwen2.5-0.5B", "qwen2", {
        "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
        "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151_936,
        "tie_word_embeddings": True}, ATTENTION_LLAMA),
    Shape("Llama-3.2-1B", "llama", {
        "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
        "vocab_size": 128_256, "tie_word_embeddings": True}, ATTENTION_LLAMA),
    Shape("Gemma-2-2B", "gemma2", {
        "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
        "vocab_size": 256_000}, ATTENTION_LLAMA),
    Shape("Phi-3-mini-4k", "phi3", {
        "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32_064},
        ("qkv_proj", "o_proj")),
    Shape("Qwen2.5-7B", "qwen2", {
        "hidden_size": 3584, "intermediate_size": 18_944, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152_064},
        ATTENTION_LLAMA),
    Shape("Mistral-7B-v0.3", "mistral", {
        "hidden_size": 4096, "intermediate_size": 14_336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32_768},
        ATTENTION_LLAMA),
    Shape("Llama-3.1-8B", "llama", {
        "hidden_size": 4096, "intermediate_size": 14_336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128_256},
        ATTENTION_LLAMA),
)

VARIANTS = ("all-linear r16", "attention r16", "daemon default")
"""LoRA r = 16 on every Linear but the head; r = 16 on the attention projections; the
daemon's defaults (``LoraSettings()``: r = 8, targets from ``detect_target_modules``)."""


def _linear_leaves(model: Any) -> list[str]:
    """Every distinct Linear leaf name but the head: what a config lists for "all linear"."""
    import torch

    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head")})


def _lora_settings(shape: Shape, variant: str, model: Any) -> Any:
    from fedswarm.learning.settings import LoraSettings

    if variant == "all-linear r16":
        return LoraSettings(r=16, alpha=32, target_modules=_linear_leaves(model))
    if variant == "attention r16":
        return LoraSettings(r=16, alpha=32, target_modules=list(shape.attention))
    return LoraSettings()


def _config(shape: Shape) -> Any:
    from transformers import AutoConfig

    return AutoConfig.for_model(shape.model_type, **shape.config)


def measure_adapter(shape: Shape, variant: str) -> dict[str, Any]:
    """Build ``shape`` on the meta device, attach the daemon's adapter, count it."""
    import torch
    from fedswarm.learning.model_loading import attach_adapter, detect_target_modules
    from peft import get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    started = time.perf_counter()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(_config(shape))
    base_params = sum(p.numel() for p in model.parameters())
    lora = _lora_settings(shape, variant, model)
    targets = lora.target_modules or detect_target_modules(model)
    expected = 0
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if not isinstance(module, torch.nn.Linear) or leaf == "lm_head":
            continue
        if leaf in targets:
            expected += lora.r * (module.in_features + module.out_features)
    peft_model = attach_adapter(model, lora)
    state = get_peft_model_state_dict(peft_model)
    adapter = sum(tensor.numel() for tensor in state.values())
    adapted = sorted({name.split(".lora_")[0].rsplit(".", 1)[-1] for name in state})
    if adapter != expected:
        raise AssertionError(f"{shape.name} {variant}: {adapter} values, expected {expected}")
    return {
        "model": shape.name,
        "variant": variant,
        "r": lora.r,
        "targets": adapted,
        "base_params": base_params,
        "layers": shape.config["num_hidden_layers"],
        "adapter_values": adapter,
        "adapter_values_per_layer": adapter // shape.config["num_hidden_layers"],
        "with_exp_avg_values": 2 * adapter,
        "build_s": round(time.perf_counter() - started, 2),
    }


def secure_ciphertexts(n_values: int, protocol: str, group: int) -> int:
    params = SecAggParams.v3() if protocol == PROTOCOL_V3 else SecAggParams(protocol=protocol)
    slots = QuantisationGrid.for_group(params, group).encoded_size(n_values)
    return -(-slots // SLOTS_PER_CIPHERTEXT)


MAX_BLOB_BYTES = NodeConfig.max_blob_bytes


def largest_message(n_values: int, group: int) -> dict[str, int]:
    """Each scheme's largest single message: plain sends one vector per peer; a secure
    UPLOAD is streamed in chunks of ``stream_chunk_ciphertexts`` (secagg/chunks.py)."""
    out = {"plain": PLAIN_HEADER + 4 * n_values}
    for name, protocol in (("secure_v2", PROTOCOL_V2), ("secure_v3", PROTOCOL_V3)):
        ciphertexts = secure_ciphertexts(n_values, protocol, group)
        out[name] = UPLOAD_OVERHEAD + CIPHERTEXT_BYTES * min(ciphertexts, CHUNK_CIPHERTEXTS)
    return out


def fits_one_blob(n_values: int, group: int) -> dict[str, bool]:
    """Whether each scheme's largest single message is within p2p's blob limit."""
    return {k: v <= MAX_BLOB_BYTES for k, v in largest_message(n_values, group).items()}


def _secure_upload(n_values: int, protocol: str, group: int) -> int:
    ciphertexts = secure_ciphertexts(n_values, protocol, group)
    chunks = -(-ciphertexts // CHUNK_CIPHERTEXTS)
    return UPLOAD_OVERHEAD * chunks + CIPHERTEXT_BYTES * ciphertexts


def upload_bytes(n_values: int, group: int) -> dict[str, int]:
    """Bytes one member sends per round for a vector of ``n_values``."""
    return {
        "plain": (group - 1) * (PLAIN_HEADER + 4 * n_values),
        "secure_v2": _secure_upload(n_values, PROTOCOL_V2, group),
        "secure_v3": _secure_upload(n_values, PROTOCOL_V3, group),
    }


def run_secagg(n_values: int, group: int) -> dict[str, Any]:
    """One ``bench.secagg`` round (v3) in a child process; its summary and upload bytes."""
    with tempfile.TemporaryDirectory(prefix="fedswarm-shapes-") as tmp:
        out = Path(tmp) / "secagg.json"
        started = time.perf_counter()
        subprocess.run(
            [*module_command("secagg"), "--params", str(n_values), "--group",
             str(group), "--protocol", PROTOCOL_V3, "--json", str(out)],
            check=True, env=child_env(), stdout=subprocess.DEVNULL,
        )
        wall = time.perf_counter() - started
        report = json.loads(out.read_text())
    summary = report["summary"]
    return {
        "values": n_values,
        "group": group,
        "protocol": PROTOCOL_V3,
        "member_cpu_s": summary["member_cpu_s"],
        "aggregator_cpu_s": summary["aggregator_cpu_s"],
        "decryptor_cpu_s": summary["decryptor_cpu_s"],
        "member_peak_rss_mb": summary["member_peak_rss_mb"],
        "aggregator_peak_rss_mb": summary["aggregator_peak_rss_mb"],
        "decryptor_peak_rss_mb": summary["decryptor_peak_rss_mb"],
        "upload_bytes_measured": report["member_replay"]["upload_bytes"],
        "max_abs_error": summary["max_abs_error"],
        "error_bound": summary["error_bound"],
        "round_wall_s": summary["round_wall_s"],
        "benchmark_wall_s": round(wall, 1),
    }


def _versions() -> dict[str, str]:
    import numpy
    import peft
    import tenseal
    import torch
    import transformers

    return {"python": sys.version.split()[0], "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__,
            "numpy": numpy.__version__, "tenseal": tenseal.__version__}


def run(group: int, measure_values: Sequence[int],
        models: Sequence[str] | None = None) -> dict[str, Any]:
    rows = []
    for shape in SHAPES:
        if models and shape.name not in models:
            continue
        for variant in VARIANTS:
            row = measure_adapter(shape, variant)
            row["upload_bytes_adapter"] = upload_bytes(row["adapter_values"], group)
            row["upload_bytes_with_exp_avg"] = upload_bytes(row["with_exp_avg_values"], group)
            row["fits_one_blob_with_exp_avg"] = fits_one_blob(row["with_exp_avg_values"], group)
            rows.append(row)
    measured = []
    for n_values in measure_values:
        result = run_secagg(n_values, group)
        result["predicted_upload_bytes"] = upload_bytes(n_values, group)["secure_v3"]
        result["shapes"] = [f"{row['model']} {row['variant']}" + (" + exp_avg" if moments else "")
                            for row in rows
                            for moments, size in ((False, row["adapter_values"]),
                                                  (True, row["with_exp_avg_values"]))
                            if size == n_values]
        measured.append(result)
    return {
        "benchmark": "real-shapes",
        "machine": {"platform": platform.platform(), "cpu": cpu_model(),
                    "cpu_count": os.cpu_count()},
        "versions": _versions(),
        "parameters": {"group": group, "max_blob_bytes": MAX_BLOB_BYTES,
                       "ciphertext_bytes": CIPHERTEXT_BYTES, "upload_overhead": UPLOAD_OVERHEAD,
                       "default_daemon_vector": "adapter + exp_avg (average_optimizer_state)",
                       "bytes_columns": "with exp_avg, what the daemon averages by default"},
        "shapes": rows,
        "secagg_v3": measured,
    }


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:,.1f}"


def format_table(report: dict[str, Any]) -> str:
    group = report["parameters"]["group"]
    header = ["model", "LoRA", "targets", "adapter values", "+ exp_avg",
              f"plain MB sent (k={group})", "v2 upload MB", "v3 upload MB", "one blob?"]
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    for row in report["shapes"]:
        sent = row["upload_bytes_with_exp_avg"]
        fits = row["fits_one_blob_with_exp_avg"]
        lines.append(" | ".join([
            row["model"], row["variant"], ",".join(row["targets"]),
            f"{row['adapter_values']:,}", f"{row['with_exp_avg_values']:,}",
            _mb(sent["plain"]), _mb(sent["secure_v2"]), _mb(sent["secure_v3"]),
            "all" if all(fits.values()) else "not " + ",".join(k for k, v in fits.items() if not v),
        ]))
    if report["secagg_v3"]:
        lines += ["", "bench.secagg, v3, k = " + str(group),
                  "values | shapes | member CPU s | A CPU s | D CPU s"
                  " | member / A / D peak RSS MB | upload MB measured (model) | round wall s",
                  "--- | --- | --- | --- | --- | --- | --- | ---"]
        for m in report["secagg_v3"]:
            lines.append(
                f"{m['values']:,} | {'; '.join(m['shapes'])} | {m['member_cpu_s']:.2f} | "
                f"{m['aggregator_cpu_s']:.2f} | "
                f"{m['decryptor_cpu_s']:.2f} | {m['member_peak_rss_mb']:.0f} / "
                f"{m['aggregator_peak_rss_mb']:.0f} / {m['decryptor_peak_rss_mb']:.0f} | "
                f"{m['upload_bytes_measured'] / 1e6:,.1f} "
                f"({m['predicted_upload_bytes'] / 1e6:,.1f}) | {m['round_wall_s']:.1f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--measure-values", default="",
                        help="comma-separated vector sizes to run bench.secagg (v3) at")
    parser.add_argument("--models", default="", help="comma-separated subset of model names")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    sizes = [int(n) for n in args.measure_values.split(",") if n.strip()]
    report = run(args.group, sizes, models or None)
    text = json.dumps(report, indent=2)
    print(text)
    print()
    print(format_table(report))
    print(f"\nmachine: {report['machine']['cpu']}, {report['machine']['cpu_count']} cores; "
          + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
