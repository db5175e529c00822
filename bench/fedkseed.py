"""FedKSeed against local-only FedKSeed and federated LoRA, on the demo model.

    python -m bench.fedkseed --json out.json
    python -m bench.fedkseed --rounds 2 --steps 10      # a quick look

Three members, one non-IID demo shard each, one group per round (the demo's size), all in
this process over ``FunctionLink`` and real mailboxes, through the modes' own exchanges
(``make_exchange``), so the bytes are the ones a daemon sends. Arms:

* ``fedkseed`` (plain averaging) and ``fedkseed-secure`` (BFV v3): K-vectors averaged;
* ``fedkseed-local``: the same steps, never averaged;
* ``lora-forwards``: federated LoRA with as many forward passes per round as FedKSeed
  (a FedKSeed step is two forwards, a LoRA step one forward and one backward);
* ``lora-wall``: federated LoRA with as much training time per round as FedKSeed took.

Every model is evaluated on the union of the domains' eval sets. Peak memory: a fresh
process per trainer (FedKSeed, LoRA) loads the model and trains; its peak RSS above the
interpreter with torch imported is reported (``/proc/self/clear_refs`` resets the peak).
Prints a table and writes JSON with the machine and library versions.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fedswarm.daemon.demo.local_federation import demo_base_model_sha256, demo_model_cache_dir
from fedswarm.federation.averaging.secure import SecureAggregation
from fedswarm.federation.exchange import Exchange, MemberParts
from fedswarm.federation.link import FunctionLink
from fedswarm.federation.mailbox import Letter, Mailbox
from fedswarm.federation.modes import make_exchange
from fedswarm.federation.modes.lora_avg import LoraAveragingSettings
from fedswarm.federation.round import RoundContext
from fedswarm.learning.demo_assets import (
    DEMO_LORA_TARGETS,
    DEMO_LR,
    DEMO_MAX_LENGTH,
    build_demo_model,
    write_demo_shards,
)
from fedswarm.learning.fedkseed import KSeedSettings, KSeedTrainer
from fedswarm.learning.settings import DataSettings, LoraSettings, ModelSettings, TrainSettings
from fedswarm.learning.trainer import LocalTrainer
from fedswarm.secagg.he import make_executor
from fedswarm.secagg.params import PROTOCOL_V3
from fedswarm.secagg.signing import Ed25519Signer, verifier_from_keys

from . import child_env, module_command
from .quality_report import machine

FEDERATION_ID = "bench-fedkseed"
TARGET_BYTES = 20 * 1024  # issue #22: a member's plain bytes per round
TARGET_MEMORY_RATIO = 0.6  # issue #22: FedKSeed's peak memory against LoRA training's


@dataclass(frozen=True)
class BenchSettings:
    """One run's knobs (every arm uses the same data, batch and sequence length)."""

    peers: int = 3
    rounds: int = 4
    steps: int = 30
    k: int = 1024
    lr: float = 2e-4
    eps: float = 5e-4
    batch_size: int = 8
    max_length: int = DEMO_MAX_LENGTH
    seed: int = 0


@dataclass
class Arm:
    """One arm's per-round, per-member records and its final union eval loss."""

    name: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    union_loss: float = float("nan")
    train_s_per_member_round: float = 0.0


class Network:
    """Mailboxes per member; each member's link files its blobs into the others'."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.mailboxes = {n: Mailbox(max_bytes_per_sender_per_round=2**26) for n in names}

    def context(self, me: str, round: int) -> RoundContext:
        async def send(peer: str, kind: str, rnd: int, payload: bytes) -> None:
            self.mailboxes[peer].put(Letter(me, rnd, kind, payload))

        return RoundContext(
            me=me,
            round=round,
            members=tuple(self.names),
            link=FunctionLink(send),
            mailbox=self.mailboxes[me],
            deadline=time.monotonic() + 300,
            on_reject=lambda *why: None,
        )


def _data(shard_dir: Path, peer: int, settings: BenchSettings) -> DataSettings:
    shard = sorted(shard_dir.glob(f"peer-{peer}-*"))[0]
    return DataSettings(
        str(shard / "train.jsonl"),
        str(shard_dir / "eval_all.jsonl"),
        max_length=settings.max_length,
    )


def _train_settings(settings: BenchSettings, peer: int) -> TrainSettings:
    return TrainSettings(
        batch_size=settings.batch_size,
        lr=DEMO_LR,
        seed=settings.seed + peer,
        schedule="constant",
        eval_batches=None,
    )


def kseed_settings(settings: BenchSettings, base_sha256: str) -> KSeedSettings:
    return KSeedSettings(
        k=settings.k,
        lr=settings.lr,
        eps=settings.eps,
        steps_per_round=settings.steps,
        base_model_sha256=base_sha256,
    )


def _kseed(
    model: Path, shards: Path, peer: int, settings: BenchSettings, base: str
) -> KSeedTrainer:
    return KSeedTrainer(
        ModelSettings(str(model)),
        _data(shards, peer, settings),
        _train_settings(settings, peer),
        kseed_settings(settings, base),
        FEDERATION_ID,
    )


def _lora(model: Path, shards: Path, peer: int, settings: BenchSettings) -> LocalTrainer:
    return LocalTrainer(
        ModelSettings(str(model)),
        LoraSettings(target_modules=list(DEMO_LORA_TARGETS)),
        _data(shards, peer, settings),
        _train_settings(settings, peer),
    )


def run_arm(
    name: str,
    trainers: list[LocalTrainer],
    exchanges: list[Exchange] | None,
    rounds: int,
    steps: int,
) -> Arm:
    """``rounds`` of ``steps`` local steps each, averaged in one group unless
    ``exchanges`` is None (local only)."""
    arm = Arm(name)
    names = [f"m{i}" for i in range(len(trainers))]
    network = Network(names)
    train_s = 0.0
    for rnd in range(1, rounds + 1):
        for mailbox in network.mailboxes.values():
            mailbox.advance(rnd)
        losses = []
        for trainer in trainers:
            started = time.perf_counter()
            losses.append(trainer.train(steps).loss)
            train_s += time.perf_counter() - started
        sent = [0] * len(trainers)
        if exchanges is not None:

            async def everyone(r: int = rnd) -> list[Any]:
                return await asyncio.gather(
                    *(
                        ex.combine(network.context(n, r), float(t.num_train_samples))
                        for ex, n, t in zip(exchanges, names, trainers, strict=True)
                    )
                )

            combined = asyncio.run(everyone())
            for result in combined:
                assert result.apply is not None
                result.apply()
            sent = [int(c.record["bytes_sent"]) for c in combined]
        for i, trainer in enumerate(trainers):
            union = trainer.evaluate().loss
            arm.rows.append(
                {
                    "arm": name,
                    "round": rnd,
                    "member": names[i],
                    "bytes_sent": sent[i],
                    "train_loss": round_or_none(losses[i]),
                    "union_loss": round(union, 5),
                }
            )
    arm.union_loss = float(np.mean([r["union_loss"] for r in arm.rows if r["round"] == rounds]))
    arm.train_s_per_member_round = train_s / (rounds * len(trainers))
    return arm


def round_or_none(value: float | None) -> float | None:
    return None if value is None else round(float(value), 5)


def _kseed_exchanges(
    trainers: list[KSeedTrainer], secure: list[SecureAggregation] | None = None
) -> list[Exchange]:
    return [
        make_exchange(
            "fedkseed",
            MemberParts(
                trainer=t, secure=None if secure is None else secure[i], work_dir=Path("."), seed=i
            ),
            t.settings,
        )
        for i, t in enumerate(trainers)
    ]


def _secure(n: int, pool: concurrent.futures.ProcessPoolExecutor) -> list[SecureAggregation]:
    names = [f"m{i}" for i in range(n)]
    signers = {m: Ed25519Signer.generate(m) for m in names}
    verify = verifier_from_keys({m: s.verify_key for m, s in signers.items()})
    return [
        SecureAggregation(
            FEDERATION_ID, signers[m], verify, lambda: pool, 60.0, protocol=PROTOCOL_V3
        )
        for m in names
    ]


def lora_step_seconds(model: Path, shards: Path, settings: BenchSettings) -> float:
    """The measured time of one LoRA step (after two warm-up steps)."""
    trainer = _lora(model, shards, 0, settings)
    trainer.train(2)
    started = time.perf_counter()
    trainer.train(5)
    return (time.perf_counter() - started) / 5


# -- peak memory, one fresh process per trainer ---------------------------------------------


def _rss_kb(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def memory_probe(
    kind: str, model: Path, shards: Path, settings: BenchSettings, base: str
) -> dict[str, float]:
    """Peak RSS (MB) of building ``kind``'s trainer and training ``settings.steps`` steps,
    above the interpreter with torch and transformers imported."""
    import gc

    gc.collect()
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    floor = _rss_kb("VmRSS")
    trainer: LocalTrainer = (
        _kseed(model, shards, 0, settings, base)
        if kind == "fedkseed"
        else _lora(model, shards, 0, settings)
    )
    loaded = _rss_kb("VmRSS")
    trainer.train(settings.steps)
    peak = _rss_kb("VmHWM")
    return {
        "floor_mb": floor / 1024,
        "loaded_above_floor_mb": (loaded - floor) / 1024,
        "peak_above_floor_mb": (peak - floor) / 1024,
        "peak_rss_mb": peak / 1024,
    }


def _probe_in_child(
    kind: str, model: Path, shards: Path, settings: BenchSettings, base: str
) -> dict[str, float]:
    command = module_command(
        "fedkseed",
        "--memory-probe",
        kind,
        "--model",
        str(model),
        "--shards",
        str(shards),
        "--base",
        base,
        "--settings",
        json.dumps(asdict(settings)),
    )
    done = subprocess.run(
        command, env=child_env({"OMP_NUM_THREADS": "1"}), check=True, capture_output=True, text=True
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- the run --------------------------------------------------------------------------------


def run(settings: BenchSettings, workdir: Path) -> dict[str, Any]:
    torch.set_num_threads(1)
    model = build_demo_model(demo_model_cache_dir())
    shards = workdir / "shards"
    write_demo_shards(shards, settings.peers, seed=settings.seed)
    base = demo_base_model_sha256(model)
    n, rounds, steps = settings.peers, settings.rounds, settings.steps

    base_loss = _kseed(model, shards, 0, settings, base).evaluate().loss
    arms: dict[str, Arm] = {}
    kseed = [_kseed(model, shards, i, settings, base) for i in range(n)]
    arms["fedkseed"] = run_arm("fedkseed", list(kseed), _kseed_exchanges(kseed), rounds, steps)
    replay_s = float(np.mean([t.last_replay.seconds for t in kseed]))
    replay_seeds = int(np.mean([t.last_replay.seeds for t in kseed]))
    fingerprints = {t.parameters_fingerprint() for t in kseed}
    pool = make_executor(1)
    try:
        secure = [_kseed(model, shards, i, settings, base) for i in range(n)]
        arms["fedkseed-secure"] = run_arm(
            "fedkseed-secure",
            list(secure),
            _kseed_exchanges(secure, _secure(n, pool)),
            rounds,
            steps,
        )
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    local = [_kseed(model, shards, i, settings, base) for i in range(n)]
    arms["fedkseed-local"] = run_arm("fedkseed-local", list(local), None, rounds, steps)

    lora_step_s = lora_step_seconds(model, shards, settings)
    wall_steps = max(1, round(arms["fedkseed"].train_s_per_member_round / lora_step_s))
    for name, lora_steps in (("lora-forwards", 2 * steps), ("lora-wall", wall_steps)):
        loras = [_lora(model, shards, i, settings) for i in range(n)]
        exchanges = [
            make_exchange(
                "lora_avg",
                MemberParts(trainer=t, secure=None, work_dir=Path("."), seed=i),
                LoraAveragingSettings(),
            )
            for i, t in enumerate(loras)
        ]
        arms[name] = run_arm(name, list(loras), exchanges, rounds, lora_steps)
        arms[name].rows[0]["steps_per_round"] = lora_steps

    memory = {
        kind: _probe_in_child(kind, model, shards, settings, base) for kind in ("fedkseed", "lora")
    }
    plain_bytes = [r["bytes_sent"] for r in arms["fedkseed"].rows]
    secure_bytes = [r["bytes_sent"] for r in arms["fedkseed-secure"].rows]
    local_loss = arms["fedkseed-local"].union_loss
    summary = {
        "bytes_per_member_round": float(np.mean(plain_bytes)),
        "bytes_per_member_round_secure": float(np.mean(secure_bytes)),
        "fed_over_local_loss": arms["fedkseed"].union_loss / local_loss,
        "memory_ratio": (
            memory["fedkseed"]["peak_above_floor_mb"] / memory["lora"]["peak_above_floor_mb"]
        ),
        "base_union_loss": base_loss,
        "union_loss": {name: arm.union_loss for name, arm in arms.items()},
        "members_bit_identical": len(fingerprints) == 1,
        "replay_s": replay_s,
        "replay_seeds": replay_seeds,
        "lora_step_s": lora_step_s,
        "lora_wall_steps_per_round": wall_steps,
        "fedkseed_train_s_per_member_round": arms["fedkseed"].train_s_per_member_round,
        "tuned_parameters": kseed[0].tuned_parameters,
    }
    summary["targets"] = {
        "bytes_per_member_round <= 20 KB": summary["bytes_per_member_round"] <= TARGET_BYTES,
        "fed_over_local_loss < 1": summary["fed_over_local_loss"] < 1.0,
        "memory_ratio <= 0.6": summary["memory_ratio"] <= TARGET_MEMORY_RATIO,
    }
    return {
        "settings": asdict(settings),
        "summary": summary,
        "memory": memory,
        "rows": [row for arm in arms.values() for row in arm.rows],
        "machine": machine(),
    }


def table(result: dict[str, Any]) -> str:
    """Per round and member, then the summary against the targets, then the machine."""
    lines = [
        f"{'arm':<16} {'round':>5} {'member':>6} {'bytes sent':>10} {'train loss':>10} "
        f"{'union loss':>10}"
    ]
    lines.append("-" * len(lines[0]))
    for row in result["rows"]:
        train = "-" if row["train_loss"] is None else f"{row['train_loss']:.4f}"
        lines.append(
            f"{row['arm']:<16} {row['round']:>5} {row['member']:>6} "
            f"{row['bytes_sent']:>10} {train:>10} {row['union_loss']:>10.4f}"
        )
    s = result["summary"]
    lines.append("")
    lines.append(
        f"base union loss {s['base_union_loss']:.4f}; final union loss: "
        + ", ".join(f"{name} {loss:.4f}" for name, loss in s["union_loss"].items())
    )
    lines.append(
        f"bytes per member round: plain {s['bytes_per_member_round']:.0f}, secure "
        f"{s['bytes_per_member_round_secure']:.0f}; fed/local union loss "
        f"{s['fed_over_local_loss']:.4f}; memory FedKSeed/LoRA {s['memory_ratio']:.2f}"
    )
    mem = result["memory"]
    lines.append(
        "peak MB above torch imported: "
        + ", ".join(
            f"{k} {v['peak_above_floor_mb']:.1f} (model+data loaded "
            f"{v['loaded_above_floor_mb']:.1f}, peak RSS {v['peak_rss_mb']:.0f})"
            for k, v in mem.items()
        )
    )
    lines.append(
        f"replay {s['replay_seeds']} seeds in {s['replay_s']:.2f} s; FedKSeed "
        f"{s['fedkseed_train_s_per_member_round']:.1f} s per member round, LoRA step "
        f"{s['lora_step_s']:.3f} s ({s['lora_wall_steps_per_round']} steps at equal "
        f"wall time); members bit-identical: {s['members_bit_identical']}"
    )
    lines.append(
        "targets: " + ", ".join(f"{k}: {'yes' if ok else 'NO'}" for k, ok in s["targets"].items())
    )
    m = result["machine"]
    lines.append(
        f"machine: {m['cpu']} ({m['cpu_count']} cpus, torch threads "
        f"{m['torch_threads']}), " + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--rounds", type=int, default=BenchSettings.rounds)
    parser.add_argument("--steps", type=int, default=BenchSettings.steps)
    parser.add_argument("--k", type=int, default=BenchSettings.k)
    parser.add_argument("--max-length", type=int, default=BenchSettings.max_length)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-fedkseed"))
    parser.add_argument("--memory-probe", choices=("fedkseed", "lora"), help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--shards", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.memory_probe:
        torch.set_num_threads(1)
        settings = BenchSettings(**json.loads(args.settings))
        print(
            json.dumps(
                memory_probe(args.memory_probe, args.model, args.shards, settings, args.base)
            )
        )
        return
    settings = BenchSettings(
        rounds=args.rounds, steps=args.steps, k=args.k, max_length=args.max_length
    )
    result = run(settings, args.workdir)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
