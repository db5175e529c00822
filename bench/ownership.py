"""Ownership marks (FedIPR): does every member's mark survive federation, theft and pruning?

    python -m bench.ownership --json ownership.json [--secure] [--group-size K]

Four in-process peers (the demo model, one demo domain each) federate with the daemon's
own round logic (``bench.quality_inprocess.FederatedArm``: ``plan_groups``, the averaging
vector with AdamW moments, plain averaging or real secure aggregation) in three arms that
differ only in ownership:

* ``marked``: every member trains its own secret mark (``learning.ownership``) into its
  disjoint share of the RMSNorm scales, which are trainable as deltas and averaged;
* ``lora-only``: what the daemon trains without ``[ownership]`` (the quality reference).

A model that never carried a mark but whose norm scales did move is the base model after
the full fine-tuning theft below; each member's key reads it (≈ 0.5 expected).

Then the marked federation's export (LoRA merged, scale deltas folded in) is attacked:
a thief fine-tunes it ``--theft-steps`` steps on a domain no member holds, either all
weights or LoRA + norm scales (the most the norms can move); and the 20 % smallest
weights are pruned. Each member verifies its key on each result (white-box, against the
public base model) and, with ``--triggers`` (on by default), asks each model its secret
trigger prompts (black-box: the fraction answered with the key's target token). Summary
values are the lowest over members (and over theft kinds); ``unmarked`` ones the mean.
Prints a table and writes JSON with the machine, versions and settings.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from fedswarm.daemon.demo.local_federation import demo_model_cache_dir
from fedswarm.learning.demo_assets import (
    DEMO_DOMAINS,
    DEMO_LORA_TARGETS,
    DEMO_LR,
    build_demo_model,
    demo_data_dir,
)
from fedswarm.learning.ownership import MarkPlan, OwnershipKey, verify_model
from fedswarm.learning.ownership.triggers import trigger_accuracy, triggers_for
from fedswarm.learning.settings import (
    DataSettings,
    LoraSettings,
    ModelSettings,
    OwnershipSettings,
    TrainSettings,
)
from fedswarm.learning.trainer import LocalTrainer
from transformers import AutoModelForCausalLM

from .ownership_attacks import Theft, export_merged, load_examples, mean_loss, prune, steal
from .quality_inprocess import FederatedArm
from .quality_report import machine
from .quality_setup import BenchData, RunSettings, demo_data

TARGETS = {"bits_detected_after_federation": 1.0, "bits_detected_after_theft": 0.95,
           "bits_detected_after_pruning": 0.9, "union_loss_over_unmarked": 1.01}


@dataclass(frozen=True)
class OwnershipBenchSettings:
    peers: int = 4
    rounds: int = 8
    local_steps: int = 20
    bits: int = 32
    weight: float = 1.0
    margin: float = 0.15
    triggers: int = 8
    trigger_weight: float = 0.01
    theft_steps: int = 200
    theft_full_lr: float = 5e-4
    prune_fraction: float = 0.2
    group_size: int = 4
    secure: bool = False
    seed: int = 0


def bench_key(seed: int, member: str) -> OwnershipKey:
    """Deterministic keys, so a rerun measures the same marks (a daemon's are random)."""
    return OwnershipKey(hashlib.sha256(f"bench-ownership/{seed}/{member}".encode()).digest())


def marked_trainer(model_dir: Path, run: RunSettings, data: BenchData, index: int,
                   plan: MarkPlan) -> LocalTrainer:
    """``quality_setup.make_trainer``'s settings, with the member's mark."""
    peer = data.peers[index]
    return LocalTrainer(
        ModelSettings(str(model_dir)), LoraSettings(target_modules=list(DEMO_LORA_TARGETS)),
        DataSettings(str(peer.train_path), str(peer.eval_path), max_length=run.max_length),
        TrainSettings(local_steps=run.local_steps, batch_size=run.batch_size, lr=run.lr,
                      seed=run.seed + index),
        ownership=plan)


def run_arm(kind: str, model_dir: Path, cfg: OwnershipBenchSettings, run: RunSettings,
            data: BenchData, keys: dict[str, OwnershipKey]) -> tuple[FederatedArm, float]:
    """One federation; ``kind`` is ``marked`` or ``lora-only``."""
    arm = FederatedArm(model_dir, run, data, secure=cfg.secure, group_size=cfg.group_size)
    if kind != "lora-only":
        own = OwnershipSettings(enabled=True, bits=cfg.bits, weight=cfg.weight,
                                margin=cfg.margin, triggers=cfg.triggers,
                                trigger_weight=cfg.trigger_weight)
        for index, pid in enumerate(arm.ids):
            arm.trainers[pid] = marked_trainer(model_dir, run, data, index,
                                               MarkPlan(own, keys[pid], tuple(arm.ids), pid))
    wall, _ = arm.run()
    return arm, wall


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", dest="json_path", help="write results here")
    parser.add_argument("--model", help="model dir (default: the demo model)")
    parser.add_argument("--peers", type=int, default=OwnershipBenchSettings.peers)
    parser.add_argument("--rounds", type=int, default=OwnershipBenchSettings.rounds)
    parser.add_argument("--local-steps", type=int, default=OwnershipBenchSettings.local_steps)
    parser.add_argument("--bits", type=int, default=OwnershipBenchSettings.bits)
    parser.add_argument("--weight", type=float, default=OwnershipBenchSettings.weight)
    parser.add_argument("--margin", type=float, default=OwnershipBenchSettings.margin)
    parser.add_argument("--triggers", type=int, default=OwnershipBenchSettings.triggers,
                        help="secret trigger prompts per member (0: no black-box mark)")
    parser.add_argument("--trigger-weight", type=float,
                        default=OwnershipBenchSettings.trigger_weight)
    parser.add_argument("--theft-steps", type=int, default=OwnershipBenchSettings.theft_steps)
    parser.add_argument("--group-size", type=int, default=OwnershipBenchSettings.group_size,
                        help="below --peers gives rotating groups (with 6+ peers)")
    parser.add_argument("--secure", action="store_true",
                        help="average through secure aggregation (BFV + masks), not plain")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = OwnershipBenchSettings(peers=args.peers, rounds=args.rounds,
                                 local_steps=args.local_steps,
                                 bits=args.bits, weight=args.weight, margin=args.margin,
                                 triggers=args.triggers, trigger_weight=args.trigger_weight,
                                 theft_steps=args.theft_steps, group_size=args.group_size,
                                 secure=args.secure)
    model_dir = Path(args.model) if args.model else build_demo_model(demo_model_cache_dir())
    with tempfile.TemporaryDirectory(prefix="fedswarm-ownership-") as tmp:
        result = measure(model_dir, cfg, Path(tmp))
    print(table(result))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def measure(model_dir: Path, cfg: OwnershipBenchSettings, workdir: Path) -> dict[str, Any]:
    run = RunSettings(rounds=cfg.rounds, local_steps=cfg.local_steps, seed=cfg.seed)
    data = demo_data(workdir, cfg.peers, cfg.seed)
    ids = [f"peer-{i:02d}" for i in range(cfg.peers)]
    keys = {pid: bench_key(cfg.seed, pid) for pid in ids}
    arms = {kind: run_arm(kind, model_dir, cfg, run, data, keys)
            for kind in ("marked", "lora-only")}
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    marked_arm = arms["marked"][0]
    exports = {pid: export_merged(t) for pid, t in marked_arm.trainers.items()}
    model = exports[ids[0]]  # the model that leaves the consortium
    tokenizer = marked_arm.trainers[ids[0]].tokenizer
    pad = int(tokenizer.pad_token_id)

    thief_domain = DEMO_DOMAINS[(cfg.peers + cfg.seed) % len(DEMO_DOMAINS)]
    thief_rows = load_examples(demo_data_dir() / f"{thief_domain}.train.jsonl", tokenizer,
                               run.max_length, cfg.seed)
    thief_eval = load_examples(demo_data_dir() / f"{thief_domain}.eval.jsonl", tokenizer,
                               run.max_length, cfg.seed)
    thefts = [Theft("full-fine-tune", "all", cfg.theft_full_lr, cfg.theft_steps),
              Theft("lora+norms", "lora+norms", DEMO_LR, cfg.theft_steps)]
    stolen = {t.name: steal(model, t, thief_rows, pad, cfg.seed + 99, list(DEMO_LORA_TARGETS))
              for t in thefts}
    pruned = prune(model, cfg.prune_fraction)
    unmarked = steal(base, thefts[0], thief_rows, pad, cfg.seed + 99, list(DEMO_LORA_TARGETS))

    def rate(suspect: torch.nn.Module, pid: str) -> float:
        return verify_model(suspect, base, keys[pid], ids, pid, cfg.bits).detected

    triggers = {pid: triggers_for(keys[pid], cfg.triggers, tokenizer) for pid in ids} \
        if cfg.triggers else {}

    def answered(suspect: torch.nn.Module, pid: str) -> float:
        return trigger_accuracy(suspect, triggers[pid])

    members = []
    for pid in ids:
        members.append({
            "member": pid,
            "key_id": keys[pid].key_id,
            "bits_detected_after_federation": min(rate(m, pid) for m in exports.values()),
            "bits_detected_after_theft": {n: rate(m, pid) for n, m in stolen.items()},
            "bits_detected_after_pruning": rate(pruned, pid),
            "bits_detected_unmarked": rate(unmarked, pid),
        })
        if triggers:
            members[-1].update({
                "trigger_accuracy_after_federation": min(answered(m, pid)
                                                         for m in exports.values()),
                "trigger_accuracy_after_theft": {n: answered(m, pid) for n, m in stolen.items()},
                "trigger_accuracy_unmarked": answered(unmarked, pid),
            })
    union = load_examples(data.union_eval, tokenizer, run.max_length, cfg.seed)
    loss = {
        "marked": mean_loss(model, union, pad),
        "lora-only": mean_loss(export_merged(arms["lora-only"][0].trainers[ids[0]]), union, pad),
        "base": mean_loss(base, union, pad),
        "pruned": mean_loss(pruned, union, pad),
    }
    theft_loss = {"before": mean_loss(model, thief_eval, pad),
                  **{n: mean_loss(m, thief_eval, pad) for n, m in stolen.items()}}
    summary = {
        "bits_detected_after_federation": min(m["bits_detected_after_federation"]
                                              for m in members),
        "bits_detected_after_theft": min(v for m in members
                                         for v in m["bits_detected_after_theft"].values()),
        "bits_detected_after_pruning": min(m["bits_detected_after_pruning"] for m in members),
        "bits_detected_unmarked": statistics.fmean(m["bits_detected_unmarked"]
                                                   for m in members),
        "bits_detected_unmarked_max": max(m["bits_detected_unmarked"] for m in members),
        "union_loss_over_unmarked": loss["marked"] / loss["lora-only"],
    }
    if triggers:
        summary.update({
            "trigger_accuracy_after_federation": min(m["trigger_accuracy_after_federation"]
                                                     for m in members),
            "trigger_accuracy_after_theft": min(v for m in members
                                                for v in m["trigger_accuracy_after_theft"]
                                                .values()),
            "trigger_accuracy_unmarked": statistics.fmean(m["trigger_accuracy_unmarked"]
                                                          for m in members),
        })
    return {
        "benchmark": "ownership",
        "machine": machine(),
        "settings": {**asdict(cfg), "lr": run.lr, "batch_size": run.batch_size,
                     "max_length": run.max_length, "thief_domain": thief_domain,
                     "thefts": [asdict(t) for t in thefts],
                     "protocol": marked_arm.params.protocol if cfg.secure else "none",
                     "domains": data.domains},
        "summary": summary,
        "targets": TARGETS,
        "members": members,
        "union_eval_loss": loss,
        "thief_domain_eval_loss": theft_loss,
        "wall_s": {kind: round(wall, 1) for kind, (_, wall) in arms.items()},
        "adapter_values": {kind: arm.trainers[ids[0]].adapter_size
                           for kind, (arm, _) in arms.items()},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def table(result: dict[str, Any]) -> str:
    """Members × checks, then the summary against the targets, then the machine."""
    head = (f"{'member':<9} {'key id':<13} {'federated':>9} {'theft full':>10} "
            f"{'theft lora':>10} {'pruned':>7} {'unmarked':>8} | triggers: "
            f"{'fed':>5} {'full':>5} {'lora':>5} {'unm.':>5}")
    lines = [head, "-" * len(head)]
    for m in result["members"]:
        theft = m["bits_detected_after_theft"]
        line = (f"{m['member']:<9} {m['key_id']:<13} "
                f"{m['bits_detected_after_federation']:>9.3f} "
                f"{theft['full-fine-tune']:>10.3f} {theft['lora+norms']:>10.3f} "
                f"{m['bits_detected_after_pruning']:>7.3f} "
                f"{m['bits_detected_unmarked']:>8.3f} | triggers: ")
        if "trigger_accuracy_after_federation" in m:
            t_theft = m["trigger_accuracy_after_theft"]
            line += (f"{m['trigger_accuracy_after_federation']:>5.3f} "
                     f"{t_theft['full-fine-tune']:>5.3f} {t_theft['lora+norms']:>5.3f} "
                     f"{m['trigger_accuracy_unmarked']:>5.3f}")
        else:
            line += "off"
        lines.append(line)
    lines.append("")
    for name, value in result["summary"].items():
        target = TARGETS.get(name)
        goal = "" if target is None else (
            f"  (target {'<=' if name.startswith('union') else '>='} {target})")
        lines.append(f"{name:<32} {value:.4f}{goal}")
    lines.append("union eval loss: " + ", ".join(
        f"{k} {v:.4f}" for k, v in result["union_eval_loss"].items()))
    lines.append("thief-domain eval loss: " + ", ".join(
        f"{k} {v:.4f}" for k, v in result["thief_domain_eval_loss"].items()))
    mach = result["machine"]
    lines.append(f"machine: {mach['cpu']} ({mach['cpu_count']} cpus, torch threads "
                 f"{mach['torch_threads']}), python {mach['python']}; "
                 + ", ".join(f"{k} {v}" for k, v in mach["versions"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
