"""One federated round of 3 real daemons per real model shape (issue #27, item 2).

``bench.shapes`` counts adapters on the ``meta`` device; this runs them. For each shape
a model folder is written from bench.shapes' published config with the decoder cut to
``--layers`` layers (``bench.shape_reduce``: every other dimension and the vocabulary
kept), random weights, and the demo tokenizer beside it (its ids are below every real
vocabulary size; nothing is downloaded). Three ``fedswarm run`` daemons
(``LocalFederation`` with the folder used as it is, so each daemon detects its LoRA
targets itself) then run one round with secure aggregation (the default, v3) and
``average_optimizer_state`` on, so the vector is adapter + AdamW's ``exp_avg``.

Reported per shape: LoRA targets, adapter and exp_avg values (from the checkpoint) and
their full-depth extrapolation against bench.shapes' meta-device count, the round log's
time per phase, bytes sent and received, each daemon's peak RSS (``bench.group_rss``),
checkpoint size, whether the three adapter fingerprints agree, and whether ``fedswarm
export``'s folder loads with a stock ``PeftModel.from_pretrained`` into the same tensors.

Weights are fp32, what a CPU daemon picks by itself (``[model] dtype = "auto"``);
``--dtype bfloat16`` is there for a machine with native bf16. The three daemons load the
same safetensors file, which transformers maps rather than copies, so its pages are
shared: each daemon's peak RSS counts them, its peak PSS counts its share.

    python -m bench.shape_round --json shape_round.json
    python -m bench.shape_round --shapes Gemma-2-2B,Phi-3-mini --layers 1
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .shape_reduce import SHAPE_ALIASES, Extrapolated, reduced_config, shape_named
from .shapes import Shape, measure_adapter

PEERS = 3


def _tokenizer() -> Any:
    from fedswarm.daemon.demo.local_federation import demo_model_cache_dir
    from fedswarm.learning.demo_assets import build_demo_model
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(build_demo_model(demo_model_cache_dir())))


def write_model(shape: Shape, layers: int, dtype: str, out: Path) -> dict[str, Any]:
    """The reduced model with random weights, saved in ``dtype``; its facts."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = _tokenizer()
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = AutoConfig.for_model(shape.model_type, **reduced_config(shape, layers, ids))
    with torch.device("meta"):
        parameters = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    started = time.perf_counter()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    del model
    gc.collect()
    return {
        "layers": layers,
        "parameters": parameters,
        "dtype": dtype,
        "model_bytes": sum(f.stat().st_size for f in out.glob("*.safetensors")),
        "build_s": round(time.perf_counter() - started, 1),
    }


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def checkpoint_facts(state_dir: Path) -> dict[str, Any]:
    """Targets, adapter and exp_avg values, and size of a daemon's latest checkpoint."""
    import torch
    from fedswarm.learning.checkpoint_files import latest_dir
    from safetensors.torch import load_file

    path = latest_dir(state_dir / "checkpoint")
    adapter_dir = path / "adapter"
    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    adapter = sum(t.numel() for t in tensors.values())
    state = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=True)
    exp_avg = sum(
        s["exp_avg"].numel() for s in state["optimizer"]["state"].values() if "exp_avg" in s
    )
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    return {
        "targets": sorted(config["target_modules"]),
        "r": config["r"],
        "adapter_values": adapter,
        "exp_avg_values": exp_avg,
        "checkpoint_bytes": _dir_bytes(path),
        "adapter_file_bytes": _dir_bytes(adapter_dir),
    }


def export_and_load(
    config_path: Path, model_dir: Path, dtype: str, out: Path, checkpoint_dir: Path
) -> dict[str, Any]:
    """``fedswarm export``, then a stock ``PeftModel.from_pretrained`` on its folder."""
    import torch
    from fedswarm.learning.checkpoint_files import latest_dir
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedswarm.daemon.cli",
            "export",
            "--config",
            str(config_path),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=_child_env(),
    )
    result: dict[str, Any] = {
        "export_s": round(time.perf_counter() - started, 1),
        "export_rc": done.returncode,
    }
    if done.returncode != 0:
        result["export_error"] = (done.stderr or done.stdout).strip()[-600:]
        return result
    started = time.perf_counter()
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype))
    model = PeftModel.from_pretrained(base, str(out))
    loaded = get_peft_model_state_dict(model)
    saved = load_file(str(latest_dir(checkpoint_dir) / "adapter" / "adapter_model.safetensors"))
    same = set(loaded) == set(saved) and all(
        torch.equal(loaded[k].float(), saved[k].float()) for k in saved
    )
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, 10, 20, 30]])).logits
    result.update(
        {
            "peft_loads": True,
            "peft_equals_checkpoint": same,
            "peft_forward_finite": bool(torch.isfinite(logits).all()),
            "peft_load_s": round(time.perf_counter() - started, 1),
        }
    )
    del model, base
    gc.collect()
    return result


def _child_env() -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "FEDSWARM_TORCH_THREADS": "1",
    }


def _round_one(state_dir: Path) -> dict[str, Any] | None:
    """Round 1's row of the daemon's round log (``daemon/state.py`` ``RoundRecord``)."""
    from fedswarm.daemon.state import StateStore

    store = StateStore.open(state_dir)
    try:
        record = store.round_record(1)
        return None if record is None else record.as_dict()
    finally:
        store.close()


def run_federation(
    model_dir: Path,
    dtype: str,
    workdir: Path,
    steps: int,
    batch: int,
    max_length: int,
    timeout_s: float,
) -> dict[str, Any]:
    """Three daemons, one secure round; the round log, RSS and checkpoint of each."""
    from fedswarm.daemon.demo.local_federation import LocalFederation

    from .group_rss import GroupPeakRss

    federation = LocalFederation(
        workdir,
        PEERS,
        1,
        local_steps=steps,
        batch_size=batch,
        max_length=max_length,
        round_deadline_s=timeout_s,
        model_dir=model_dir,
        demo_model=False,
        overrides={
            "model": {"dtype": dtype},
            "train": {"eval_batches": 1, "samples_per_round": 1, "sample_max_new_tokens": 8},
        },
    )
    federation.prepare()
    started = time.perf_counter()
    peers: list[dict[str, Any]] = []
    with federation:
        groups = [p.process.pid for p in federation.peers if p.process is not None]
        with GroupPeakRss(groups) as rss:
            try:
                federation.wait_rounds(1, timeout_s)
                error = None
            except Exception as exc:  # a failed shape is a row, not a crash
                error = str(exc)[-1500:]
            wall = time.perf_counter() - started
            rss.sample()
        for peer, group in zip(federation.peers, groups, strict=True):
            facts: dict[str, Any] = {
                "org": peer.org,
                **rss.report_mb(group),
                "round": _round_one(peer.state_dir),
            }
            if error is None:
                facts.update(checkpoint_facts(peer.state_dir))
            peers.append(facts)
    return {
        "error": error,
        "round_wall_s": round(wall, 1),
        "peers": peers,
        "config_path": str(federation.peers[0].config_path),
        "checkpoint_dir": str(federation.peers[0].state_dir / "checkpoint"),
        "logs": {p.org: federation.log_tail(p.org, 8) for p in federation.peers} if error else {},
    }


def run_shape(
    name: str,
    layers: int,
    dtype: str,
    workdir: Path,
    steps: int,
    batch: int,
    max_length: int,
    timeout_s: float,
) -> dict[str, Any]:
    shape = shape_named(name)
    meta = measure_adapter(shape, "daemon default")  # the full-depth count on meta
    row: dict[str, Any] = {
        "shape": shape.name,
        "model_type": shape.model_type,
        "real_layers": shape.config["num_hidden_layers"],
        "meta_adapter_values": meta["adapter_values"],
    }
    model_dir = workdir / "model"
    try:
        row["model"] = write_model(shape, layers, dtype, model_dir)
        row["federation"] = fed = run_federation(
            model_dir,
            row["model"]["dtype"],
            workdir / "federation",
            steps,
            batch,
            max_length,
            timeout_s,
        )
        if fed["error"] is None:
            first = fed["peers"][0]
            extrapolated = Extrapolated(first["adapter_values"], layers, row["real_layers"])
            fingerprints = {p["round"]["adapter_fingerprint"] for p in fed["peers"]}
            row.update(
                {
                    "targets": first["targets"],
                    "r": first["r"],
                    "adapter_values": first["adapter_values"],
                    "exp_avg_values": first["exp_avg_values"],
                    "adapter_values_per_layer": extrapolated.per_layer,
                    "full_adapter_values": extrapolated.full,
                    "full_matches_meta": extrapolated.full == meta["adapter_values"],
                    "fingerprints_agree": len(fingerprints) == 1 and None not in fingerprints,
                    "statuses": [p["round"]["status"] for p in fed["peers"]],
                }
            )
            row["export"] = export_and_load(
                Path(fed["config_path"]),
                model_dir,
                row["model"]["dtype"],
                workdir / "export",
                Path(fed["checkpoint_dir"]),
            )
    except Exception as exc:  # report the shape as failed, go on
        row["error"] = f"{type(exc).__name__}: {exc}"
        row["traceback"] = traceback.format_exc()[-2000:]
    return row


def _f(value: Any, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def format_table(report: dict[str, Any]) -> str:
    header = [
        "shape",
        "layers (dtype)",
        "targets",
        "adapter / exp_avg values",
        "per layer",
        "full (meta)",
        "train s",
        "aggregate s",
        "apply s",
        "sent MB",
        "received MB",
        "peak RSS MB daemon (+ pool)",
        "peak PSS MB (group)",
        "ckpt MB",
        "agree",
        "PeftModel",
    ]
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    for row in report["shapes"]:
        if "adapter_values" not in row:
            error = row.get("error") or row.get("federation", {}).get("error", "?")
            lines.append(f"{row['shape']} | failed: {str(error).splitlines()[0][:200]}")
            continue
        peers = row["federation"]["peers"]
        rounds = [p["round"] for p in peers]
        export = row.get("export", {})
        peft = (
            "yes, equal"
            if export.get("peft_equals_checkpoint")
            else "loads, differs"
            if export.get("peft_loads")
            else "no"
        )
        lines.append(
            " | ".join(
                [
                    row["shape"],
                    f"{row['model']['layers']} of {row['real_layers']} ({row['model']['dtype']})",
                    " ".join(row["targets"]) + f" (r{row['r']})",
                    f"{row['adapter_values']:,} / {row['exp_avg_values']:,}",
                    f"{row['adapter_values_per_layer']:,}",
                    f"{row['full_adapter_values']:,} ({'=' if row['full_matches_meta'] else '≠'} "
                    f"{row['meta_adapter_values']:,})",
                    "/".join(_f(r["train_s"]) for r in rounds),
                    "/".join(_f(r["aggregate_s"]) for r in rounds),
                    "/".join(_f(r["apply_s"]) for r in rounds),
                    "/".join(f"{(r['bytes_sent'] or 0) / 1e6:.2f}" for r in rounds),
                    "/".join(f"{(r['bytes_received'] or 0) / 1e6:.2f}" for r in rounds),
                    "/".join(
                        f"{p['daemon_peak_mb']:.0f} ({p['group_sum_of_peaks_mb']:.0f})"
                        for p in peers
                    ),
                    "/".join(f"{p['group_sum_of_pss_peaks_mb']:.0f}" for p in peers),
                    f"{peers[0]['checkpoint_bytes'] / 1e6:.1f}",
                    "yes" if row["fingerprints_agree"] else "NO",
                    peft,
                ]
            )
        )
    return "\n".join(lines)


def _machine() -> dict[str, Any]:
    from .quality_report import machine

    return machine()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shapes",
        default=",".join(SHAPE_ALIASES),
        help="comma-separated: " + ", ".join(SHAPE_ALIASES),
    )
    parser.add_argument("--layers", type=int, default=1, help="decoder layers kept")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--steps", type=int, default=1, help="local steps in the round")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=900.0, help="per round, seconds")
    parser.add_argument("--workdir", type=Path, help="kept when given; else a removed temp dir")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="fedswarm-shape-round-"))
    rows = []
    for name in [s for s in args.shapes.split(",") if s]:
        started = time.perf_counter()
        row = run_shape(
            name,
            args.layers,
            args.dtype,
            root / name,
            args.steps,
            args.batch,
            args.max_length,
            args.timeout,
        )
        row["bench_wall_s"] = round(time.perf_counter() - started, 1)
        rows.append(row)
        print(json.dumps(row, indent=2, default=str), flush=True)
        if args.workdir is None:
            shutil.rmtree(root / name, ignore_errors=True)
    m = _machine()
    report: dict[str, Any] = {
        "benchmark": "shape-round",
        "machine": m,
        "parameters": {
            "peers": PEERS,
            "rounds": 1,
            "layers": args.layers,
            "local_steps": args.steps,
            "batch_size": args.batch,
            "max_length": args.max_length,
            "secure_aggregation": "v3 (default)",
            "average_optimizer_state": True,
        },
        "shapes": rows,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "shapes"}, indent=2))
    print()
    print(format_table(report))
    print(
        f"\nmachine: {m['cpu']}, {m['cpu_count']} cores, python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    )
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    if args.workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if all("adapter_values" in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
