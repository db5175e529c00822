"""Offsite-tuning benchmark: does a federation that never sees the full model still tune it?

Run: ``python -m bench.offsite --json out.json``. The owner's model is the demo's
``deep-8`` variant (the demo model's tokenizer and width, eight layers, pre-trained the
same way); each member holds one demo domain (non-IID). The owner builds the package
(bottom and top layers as adapters, ``--keep`` of the middle layers, distilled for
``--distill-steps``); members train the adapter layers on the emulator with the real
``mode = "offsite"`` exchanges (``federation/modes/offsite.py``) over in-process links
and mailboxes, with plain averaging, or with ``--secure`` the real secure aggregation
(BFV + masks + Shamir, HE in a spawn pool); the owner plugs each confirmed average in.

Union eval loss (every member's eval set) of five models:
``full_zero_shot`` (the owner's model untuned), ``emulator_zero_shot``,
``emulator_tuned`` (emulator + federated adapters, all a member can evaluate),
``plugged_in`` (full model + federated adapters) and ``central_lora`` (the full model
LoRA-tuned centrally on the pooled data with the same optimiser steps, each seeing every
member's batch, as ``bench.quality``'s centralised arm). Also bytes (once: the package;
per round: averaging and the hand-over to the owner) and members' peak memory against
training the full model, each measured in a fresh process.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import multiprocessing
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
import transformers
from fedswarm.federation.averaging.secure import SecureAggregation
from fedswarm.federation.link import FunctionLink
from fedswarm.federation.modes.offsite import OffsiteMember, OffsiteOwner
from fedswarm.federation.round import RoundContext
from fedswarm.learning.dataset import prepare_data
from fedswarm.learning.demo_assets import (
    DEMO_LORA_TARGETS,
    DEMO_LR,
    DEMO_MAX_LENGTH,
    build_demo_model,
    demo_data_dir,
)
from fedswarm.learning.examples import BatchStream
from fedswarm.learning.model_loading import load_base_model, load_tokenizer
from fedswarm.learning.offsite import (
    OffsitePackage,
    OffsiteTrainer,
    OwnerModel,
    build_package,
    evaluate_loss,
)
from fedswarm.learning.offsite.settings import DistillSettings
from fedswarm.learning.settings import DataSettings, LoraSettings, ModelSettings, TrainSettings
from fedswarm.learning.trainer import LocalTrainer
from fedswarm.secagg.he import make_executor
from fedswarm.secagg.signing import Ed25519Signer, verifier_from_keys

from bench.fedmkt import PeakRss
from bench.machine import cpu_model
from bench.quality_setup import BATCH_SIZE, BenchData, demo_data
from bench.quality_transport import MailboxNetwork

OWNER = "peer-owner"
STEP_TIMEOUT_S = 300.0
TARGETS = {
    "plugged_in_over_full_zero_shot": "< 1",
    "plugged_in_over_central_lora": "<= 1.05",
    "emulator_zero_shot_over_full_zero_shot": ">= 1.05",
}


@dataclass(frozen=True)
class OffsiteBenchConfig:
    members: int = 3
    rounds: int = 4
    local_steps: int = 10
    offsite_lr: float = 3e-3
    keep: int = 2
    bottom: int = 2
    top: int = 2
    distill_steps: int = 50
    lora: bool = False
    secure: bool = False
    memory_steps: int = 5
    seed: int = 0


def _train_settings(
    config: OffsiteBenchConfig, lr: float, seed: int, grad_accum: int = 1
) -> TrainSettings:
    return TrainSettings(
        local_steps=config.local_steps,
        batch_size=BATCH_SIZE,
        grad_accum=grad_accum,
        lr=lr,
        seed=seed,
    )


def _lora(config: OffsiteBenchConfig) -> LoraSettings | None:
    return LoraSettings(target_modules=list(DEMO_LORA_TARGETS)) if config.lora else None


class Federation:
    """Members and the owner running ``mode = "offsite"`` in one process."""

    def __init__(
        self,
        model_dir: Path,
        package: OffsitePackage,
        data: BenchData,
        config: OffsiteBenchConfig,
        work_dir: Path,
    ) -> None:
        self.config = config
        self.ids = [f"peer-{i:02d}" for i in range(len(data.peers))]
        self.trainers = {
            pid: OffsiteTrainer(
                package,
                DataSettings(str(p.train_path), str(p.eval_path), max_length=DEMO_MAX_LENGTH),
                _train_settings(config, config.offsite_lr, config.seed + i),
                lora=_lora(config),
                device="cpu",
            )
            for i, (pid, p) in enumerate(zip(self.ids, data.peers, strict=True))
        }
        self.owner_model = OwnerModel(model_dir, package, _lora(config), device="cpu")
        self.owner = OffsiteOwner(self.owner_model, work_dir)
        self.network = MailboxNetwork([*self.ids, OWNER])
        self.pool: concurrent.futures.ProcessPoolExecutor | None = None
        secure: dict[str, SecureAggregation | None] = dict.fromkeys(self.ids)
        if config.secure:
            self.pool = make_executor(1)
            signers = {pid: Ed25519Signer.generate(pid) for pid in self.ids}
            verify = verifier_from_keys({p: s.verify_key for p, s in signers.items()})
            pool = self.pool
            secure = {
                pid: SecureAggregation(
                    "fedswarm-offsite", signers[pid], verify, lambda: pool, STEP_TIMEOUT_S
                )
                for pid in self.ids
            }
        self.members = {
            pid: OffsiteMember(self.trainers[pid], OWNER, secure[pid]) for pid in self.ids
        }
        self.bytes_per_round: list[dict[str, int]] = []

    def run(self) -> float:
        started = time.perf_counter()
        for round in range(1, self.config.rounds + 1):
            for exchange in self.members.values():
                exchange.train()
            asyncio.run(self._combine(round))
        if self.pool is not None:
            self.pool.shutdown()
        return time.perf_counter() - started

    async def _combine(self, round: int) -> None:
        self.network.advance(round)
        deadline = time.monotonic() + STEP_TIMEOUT_S
        everyone = tuple(sorted([*self.ids, OWNER]))

        async def one(me: str) -> tuple[str, Any]:
            ctx = RoundContext(
                me=me,
                round=round,
                members=everyone,
                link=FunctionLink(self.network.sender(me)),
                mailbox=self.network.mailboxes[me],
                deadline=deadline,
                on_reject=lambda *_: None,
            )
            if me == OWNER:
                return me, await self.owner.combine(ctx, 0.0)
            weight = float(self.trainers[me].num_train_samples)
            return me, await self.members[me].combine(ctx, weight)

        results = dict(await asyncio.gather(*(one(m) for m in everyone)))
        for combined in results.values():
            assert combined.apply is not None
            combined.apply()
        self.bytes_per_round.append(
            {m: int(results[m].record["bytes_sent"]) for m in self.ids}
            | {OWNER: int(results[OWNER].record["bytes_received"])}
        )


def run_central_lora(
    model_dir: Path, data: BenchData, config: OffsiteBenchConfig
) -> tuple[LocalTrainer, float]:
    """The full model, LoRA on every Linear layer, pooled data, ``members``× batch per step."""
    started = time.perf_counter()
    trainer = LocalTrainer(
        ModelSettings(str(model_dir), device="cpu"),
        LoraSettings(target_modules=list(DEMO_LORA_TARGETS)),
        DataSettings(str(data.pooled_train), str(data.union_eval), max_length=DEMO_MAX_LENGTH),
        _train_settings(config, DEMO_LR, config.seed, grad_accum=len(data.peers)),
    )
    for _ in range(config.rounds):
        trainer.train(config.local_steps)
    return trainer, time.perf_counter() - started


def _memory_worker(
    kind: str, model_dir: str, package_dir: str, train_path: str, steps: int, lora: bool
) -> dict[str, float]:
    """Peak RSS increase of loading a model and taking ``steps`` training steps."""
    torch.set_num_threads(1)
    data = DataSettings(train_path, train_path, max_length=DEMO_MAX_LENGTH)
    train = TrainSettings(local_steps=steps, batch_size=BATCH_SIZE, lr=1e-3)
    with PeakRss() as rss:
        if kind == "emulator_adapters":
            from fedswarm.learning.offsite import open_package

            lora_settings = LoraSettings(target_modules=list(DEMO_LORA_TARGETS)) if lora else None
            trainer = OffsiteTrainer(
                open_package(Path(package_dir)), data, train, lora=lora_settings, device="cpu"
            )
            trainer.train(steps)
            params = sum(p.numel() for p in trainer.model.parameters())
            trained = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        elif kind == "full_model_lora":
            lt = LocalTrainer(
                ModelSettings(model_dir, device="cpu"),
                LoraSettings(target_modules=list(DEMO_LORA_TARGETS)),
                data,
                train,
            )
            lt.train(steps)
            params = sum(p.numel() for p in lt.model.parameters())
            trained = sum(p.numel() for p in lt.model.parameters() if p.requires_grad)
        else:  # full fine-tuning of the whole model: what offsite-tuning spares members
            settings = ModelSettings(model_dir, device="cpu")
            model, _ = load_base_model(settings)
            prepared = prepare_data(data, load_tokenizer(settings), 0)
            stream = BatchStream(prepared.train, BATCH_SIZE, 0, 0)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            model.train()
            for _ in range(steps):
                model(**stream.next_batch()).loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            params = trained = sum(p.numel() for p in model.parameters())
    return {
        "peak_rss_increase_mib": (rss.peak - rss.baseline) / 2**20,
        "parameters": params,
        "trained_parameters": trained,
        # weights + gradients + AdamW's two moments, float32
        "weights_grads_adam_mib": (params + 3 * trained) * 4 / 2**20,
    }


def measure_memory(
    model_dir: Path, package: OffsitePackage, data: BenchData, config: OffsiteBenchConfig
) -> dict[str, dict[str, float]]:
    ctx = multiprocessing.get_context("spawn")
    out = {}
    for kind in ("emulator_adapters", "full_model_full_finetune", "full_model_lora"):
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
            out[kind] = pool.submit(
                _memory_worker,
                kind,
                str(model_dir),
                str(package.path),
                str(data.peers[0].train_path),
                config.memory_steps,
                config.lora,
            ).result()
    return out


def _generic_texts() -> list[str]:
    with (demo_data_dir() / "generic.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def machine() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cpu_count": psutil.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
        },
    }


def run(config: OffsiteBenchConfig, work: Path, model_dir: Path | None) -> dict[str, Any]:
    started = time.perf_counter()
    model_dir = model_dir or build_demo_model(work / "model", variant="deep-8", seed=config.seed)
    data = demo_data(work, config.members, config.seed)
    build_started = time.perf_counter()
    package = build_package(
        model_dir,
        work / "package",
        keep=config.keep,
        bottom=config.bottom,
        top=config.top,
        distill=DistillSettings(steps=config.distill_steps, seed=config.seed),
        distill_texts=_generic_texts(),
    )
    build_s = time.perf_counter() - build_started
    tokenizer = load_tokenizer(ModelSettings(str(model_dir)))
    union = prepare_data(
        DataSettings(str(data.union_eval), str(data.union_eval), max_length=DEMO_MAX_LENGTH),
        tokenizer,
        config.seed,
    ).eval
    pad = int(tokenizer.pad_token_id)

    def union_loss(model: torch.nn.Module) -> float:
        return evaluate_loss(model, union, BATCH_SIZE, pad).loss

    full, _ = load_base_model(ModelSettings(str(model_dir), device="cpu"))
    emulator, _ = load_base_model(ModelSettings(str(package.path), device="cpu"))
    losses = {"full_zero_shot": union_loss(full), "emulator_zero_shot": union_loss(emulator)}
    del full, emulator

    federation = Federation(model_dir, package, data, config, work / "owner")
    federated_s = federation.run()
    losses["emulator_tuned"] = union_loss(federation.trainers[federation.ids[0]].model)
    losses["plugged_in"] = union_loss(federation.owner_model.model)
    federation.owner_model.export(work / "plugged-in")
    central, central_s = run_central_lora(model_dir, data, config)
    losses["central_lora"] = union_loss(central.model)
    memory = measure_memory(model_dir, package, data, config)

    package_bytes = sum(p.stat().st_size for p in package.path.rglob("*") if p.is_file())
    model_bytes = sum(p.stat().st_size for p in Path(model_dir).glob("*.safetensors"))
    per_round = federation.bytes_per_round
    member_per_round = float(np.mean([r[m] for r in per_round for m in federation.ids]))
    summary = {
        **{f"union_eval_loss_{k}": v for k, v in losses.items()},
        "plugged_in_over_full_zero_shot": losses["plugged_in"] / losses["full_zero_shot"],
        "plugged_in_over_central_lora": losses["plugged_in"] / losses["central_lora"],
        "emulator_zero_shot_over_full_zero_shot": losses["emulator_zero_shot"]
        / losses["full_zero_shot"],
        "bytes_once_package_per_member": package_bytes,
        "bytes_full_model_weights": model_bytes,
        "bytes_per_round_per_member": member_per_round,
        "bytes_per_round_owner_received": float(np.mean([r[OWNER] for r in per_round])),
        "member_peak_rss_increase_mib": memory["emulator_adapters"]["peak_rss_increase_mib"],
        "full_finetune_peak_rss_increase_mib": memory["full_model_full_finetune"][
            "peak_rss_increase_mib"
        ],
    }
    return {
        "benchmark": "offsite",
        "machine": machine(),
        "config": asdict(config),
        "package": {
            "id": package.package_id,
            "layout": package.layout.to_json(),
            "emulated_from": package.layout.emulator_to_full(),
            "build_s": build_s,
        },
        "eval_loss": losses,
        "bytes_per_round": per_round,
        "memory": memory,
        "seconds": {"federated": federated_s, "central_lora": central_s},
        "summary": summary,
        "targets": TARGETS,
        "wall_s": time.perf_counter() - started,
    }


def table(result: dict[str, Any]) -> str:
    s, losses = result["summary"], result["eval_loss"]
    lines = [f"{'model':<20} {'union eval loss':>16}"]
    lines += [f"{name:<20} {loss:>16.4f}" for name, loss in losses.items()]
    lines.append("")
    for key, target in TARGETS.items():
        lines.append(f"{key:<42} {s[key]:>7.3f}  (target {target})")
    lines.append(
        f"bytes once (package to each member): {s['bytes_once_package_per_member']:,} "
        f"(full model weights: {s['bytes_full_model_weights']:,})"
    )
    lines.append(
        f"bytes per round per member: {s['bytes_per_round_per_member']:,.0f}; "
        f"owner received {s['bytes_per_round_owner_received']:,.0f}"
    )
    for kind, m in result["memory"].items():
        lines.append(
            f"peak RSS +{m['peak_rss_increase_mib']:6.1f} MiB  {kind:<26} "
            f"(trains {m['trained_parameters']:,} of {m['parameters']:,} parameters; "
            f"weights+grads+AdamW {m['weights_grads_adam_mib']:.1f} MiB)"
        )
    mach = result["machine"]
    lines.append(
        f"machine: {mach['cpu']}, {mach['cpu_count']} cores, torch threads "
        f"{mach['torch_threads']}, python {mach['python']}, "
        + ", ".join(f"{k} {v}" for k, v in mach["versions"].items())
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    defaults = OffsiteBenchConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--model", type=Path, help="a built deep-8 demo model (else built)")
    parser.add_argument("--workdir", type=Path, help="keep the work files here")
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--local-steps", type=int, default=defaults.local_steps)
    parser.add_argument("--keep", type=int, default=defaults.keep)
    parser.add_argument("--distill-steps", type=int, default=defaults.distill_steps)
    parser.add_argument("--lora", action="store_true", help="LoRA on the adapter layers")
    parser.add_argument("--secure", action="store_true", help="secure aggregation (else plain)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = OffsiteBenchConfig(
        rounds=args.rounds,
        local_steps=args.local_steps,
        keep=args.keep,
        distill_steps=args.distill_steps,
        lora=args.lora,
        secure=args.secure,
    )
    with tempfile.TemporaryDirectory(prefix="fedswarm-offsite-") as tmp:
        work = args.workdir or Path(tmp)
        result = run(config, work, args.model)
    print(table(result))
    print(json.dumps(result["summary"]))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
