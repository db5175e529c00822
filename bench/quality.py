"""Does federation pay off? Local-only vs centralised vs fedswarm, on non-IID data.

    python -m bench.quality --peers 4 --json quality.json          # real daemons
    python -m bench.quality --quick --json quality-quick.json      # in-process, CI
    python -m bench.quality --quick --total-steps 100 --sweep-local-steps 2,10,25,50 \
        --sweep-levers none,freeze_a,momentum --json sweep.json    # rounds far apart
    python -m bench.quality --quick --rounds 4 --local-steps 25 --public-share 0.4 \
        --json public.json                                       # every arm mixes a public set

Arms (same demo model, same optimiser steps per peer, same seeds):
  local_only         each peer trains alone on its own domain
  centralised        one model on the pooled data (grad_accum = peers)
  fed_plain          fedswarm, plaintext averaging, group size 4
  fed_secure         fedswarm, secure aggregation (BFV + masks + Shamir), group size 4
  fed_secure_gossip  fedswarm, secure aggregation in rotating groups of 3 (peers >= 6);
                     with fewer peers one group holds everyone, so it *is* fed_secure
                     and is reported as such rather than run twice.

The full variant runs the federated arms as real daemons (``LocalFederation``); the
quick variant runs them in this process with the real trainer, grouping, weighting,
plain averaging and secure-aggregation code over in-memory transports. Local-only and
centralised always run in process (there is nothing federated about them).
Prints a table, writes JSON with a ``summary`` and the machine and library versions.
``--sweep-local-steps`` runs the baselines once and then one federated arm per split
and lever instead (``bench/quality_sweep.py``).
``--public-share S`` mixes a shared public set into every arm's training, baselines
included, as ``[data.alignment]`` does in a daemon: fresh rows of the peers' demo domains
(``--public-rows`` per domain), or ``--public FILE`` with ``--data``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from fedswarm.daemon.demo.local_federation import demo_model_cache_dir
from fedswarm.federation.groups.plan import plan_groups
from fedswarm.learning.demo_assets import DEMO_LR, build_demo_model
from fedswarm.secagg.params import PROTOCOL_NAME, PROTOCOL_V3, PROTOCOLS, SecAggParams

from .quality_daemons import run_daemon_arm
from .quality_inprocess import run_centralised, run_federated, run_local_only
from .quality_report import ArmResult, machine, summarise, table
from .quality_setup import (
    BenchData,
    Evaluator,
    QualityBenchError,
    RunSettings,
    demo_data,
    demo_public_set,
    file_public_set,
    folder_data,
    make_trainer,
)
from .quality_sweep import (
    LEVER_NAMES,
    parse_int_list,
    settings_for,
    sweep_points,
    sweep_row,
    sweep_table,
)

DEFAULT_GROUP_SIZE = 4
GOSSIP_GROUP_SIZE = 3
GOSSIP_MIN_PEERS = 6


@dataclass(frozen=True)
class Variant:
    """Rounds × local steps and where the federated arms run."""

    name: str
    rounds: int
    local_steps: int
    daemons: bool
    lr: float = DEMO_LR
    fedprox_mu: float = 0.0


# One domain per peer makes each peer drift towards its own data between averages
# (client drift), so both variants average often: few local steps, more rounds, for
# the same optimiser steps per peer. lr 1e-2 applies to every arm; it is the better of
# 5e-3 / 1e-2 for the centralised arm too (docs/results.md has the sweep), so the
# baseline is not weakened by it. FedProx (mu 0.01, 0.1) made the federation worse here.
# The beta of the sweep's "momentum" lever when --group-momentum is not given.
DEFAULT_SWEEP_MOMENTUM = 0.5
FULL = Variant("full", rounds=45, local_steps=2, daemons=True, lr=1e-2)
QUICK = Variant("quick", rounds=10, local_steps=2, daemons=False, lr=1e-2)


@dataclass(frozen=True)
class FedArm:
    name: str
    secure: bool
    group_size: int


def federated_arms(n_peers: int) -> tuple[list[FedArm], str | None]:
    """The federated arms to run, and which arm the gossip arm aliases (if any)."""
    arms = [FedArm("fed_plain", False, DEFAULT_GROUP_SIZE),
            FedArm("fed_secure", True, DEFAULT_GROUP_SIZE)]
    gossip = FedArm("fed_secure_gossip", True, GOSSIP_GROUP_SIZE)
    ids = [f"p{i:03d}" for i in range(n_peers)]
    one_group = len(plan_groups(ids, 1, GOSSIP_GROUP_SIZE)) == 1
    if n_peers < GOSSIP_MIN_PEERS or one_group:
        return arms, "fed_secure"
    return [*arms, gossip], None


def secagg_params(protocol: str, fields_per_slot: int | None = None) -> SecAggParams:
    """The secure arms' parameters; fields_per_slot (v3) is how the grid was chosen."""
    if protocol != PROTOCOL_V3:
        return SecAggParams()
    if fields_per_slot is None:
        return SecAggParams.v3()
    return SecAggParams.v3(fields_per_slot=fields_per_slot)


def bench_data(args: argparse.Namespace, workdir: Path) -> BenchData:
    """The peers' shards (demo or ``--data``), with the public set when one is asked for."""
    data = (folder_data(workdir, args.data, args.peers) if args.data
            else demo_data(workdir, args.peers, args.seed))
    if not args.public_share:
        return data
    public = (file_public_set(args.public, args.public_share) if args.public
              else demo_public_set(workdir, data, args.public_rows, args.public_share))
    return replace(data, public=public)


def public_report(data: BenchData) -> dict[str, Any] | None:
    """What the JSON says about the public set: None when there was none."""
    if data.public is None:
        return None
    return {"share": data.public.share, "sha256": data.public.sha256,
            "rows": len(Path(data.public.path).read_text(encoding="utf-8").splitlines()),
            "arms": "every arm, baselines included"}


def run(args: argparse.Namespace) -> dict[str, Any]:
    variant = QUICK if args.quick else FULL
    settings = RunSettings(rounds=args.rounds or variant.rounds,
                           local_steps=args.local_steps or variant.local_steps, seed=args.seed,
                           lr=args.lr or variant.lr,
                           fedprox_mu=(variant.fedprox_mu if args.fedprox_mu is None
                                       else args.fedprox_mu),
                           average_optimizer_state=not args.no_average_optimizer_state,
                           freeze_lora_a=args.freeze_lora_a,
                           group_momentum=args.group_momentum, scaffold=args.scaffold,
                           schedule=args.schedule)
    if args.sweep_local_steps:
        return run_sweep(args, variant, settings)
    if args.peers < 3:
        raise QualityBenchError("--peers: a federation needs at least 3 peers to average")
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="fsq-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        data = bench_data(args, workdir)
        public = public_report(data)  # reads the file: before the workdir may go
        model_dir = build_demo_model(demo_model_cache_dir())
        evaluator = Evaluator(model_dir, settings, data)
        arms: dict[str, ArmResult] = {}
        _progress("local_only")
        arms["local_only"] = run_local_only(model_dir, settings, data, evaluator)
        _progress("centralised")
        arms["centralised"] = run_centralised(model_dir, settings, data, evaluator)
        fed_arms, alias = federated_arms(args.peers)
        template = (make_trainer(model_dir, settings, data.peers[0].eval_path,
                                 data.peers[0].eval_path, seed=0).adapter_state()
                    if variant.daemons else {})
        for arm in fed_arms:
            _progress(arm.name)
            if variant.daemons:
                arms[arm.name] = run_daemon_arm(
                    arm.name, workdir, model_dir, settings, data, evaluator, template,
                    secure=arm.secure, group_size=arm.group_size, timeout_s=args.arm_timeout)
            else:
                arms[arm.name] = run_federated(arm.name, model_dir, settings, data, evaluator,
                                               secure=arm.secure, group_size=arm.group_size,
                                               params=secagg_params(args.secagg_protocol,
                                                                    args.secagg_fields))
        if alias is not None:
            source = arms[alias]
            arms["fed_secure_gossip"] = ArmResult(
                "fed_secure_gossip", source.path, source.per_peer, source.wall_s,
                source.aggregation_s, source.bytes_per_peer_round, GOSSIP_GROUP_SIZE,
                source.protocol,
                note=f"same run as {alias}: with {args.peers} peers a group of "
                     f"{GOSSIP_GROUP_SIZE} plans one group of everyone")
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = summarise(arms)
    return {
        "benchmark": "quality",
        "variant": variant.name,
        "command": " ".join(["python -m bench.quality", *sys.argv[1:]]),
        "peers": args.peers,
        "domains": data.domains,
        "settings": asdict(settings),
        "data": str(args.data) if args.data else "bundled demo shards (one domain per peer)",
        "public_set": public,
        "union_definition": "token-weighted eval loss over the peers' domain eval sets; "
                            "per arm, the mean over peers of each peer's final adapter",
        "arms": {name: arm.as_dict() for name, arm in arms.items()},
        "summary": summary,
        "total_wall_s": round(time.perf_counter() - started, 1),
        "machine": machine(),
        "_table": table(arms, summary, data.domains),
    }


def run_sweep(args: argparse.Namespace, variant: Variant,
              settings: RunSettings) -> dict[str, Any]:
    """Baselines once, then one federated arm per (local_steps, lever)."""
    total = args.total_steps or settings.total_steps
    points = sweep_points(total, parse_int_list(args.sweep_local_steps),
                          [lever.strip() for lever in args.sweep_levers.split(",")])
    momentum = args.group_momentum or DEFAULT_SWEEP_MOMENTUM
    # The baselines: plain LoRA, the whole budget (one call or many: the same run).
    base = replace(settings, rounds=1, local_steps=total, freeze_lora_a=False,
                   group_momentum=0.0, scaffold=False)
    secure = args.sweep_arm == "secure"
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="fsq-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    try:
        data = bench_data(args, workdir)
        public = public_report(data)  # reads the file: before the workdir may go
        model_dir = build_demo_model(demo_model_cache_dir())
        evaluator = Evaluator(model_dir, base, data)
        _progress("local_only")
        local = run_local_only(model_dir, base, data, evaluator).union
        _progress("centralised")
        central = run_centralised(model_dir, base, data, evaluator).union
        for point in points:
            point_settings = settings_for(settings, point, momentum)
            name = f"fed_{args.sweep_arm}_{point.local_steps}x{point.rounds}_{point.lever}"
            _progress(name)
            if variant.daemons:
                template = make_trainer(model_dir, point_settings, data.peers[0].eval_path,
                                        data.peers[0].eval_path, seed=0,
                                        freeze_lora_a=point_settings.freeze_lora_a
                                        ).adapter_state()
                arm = run_daemon_arm(name, workdir, model_dir, point_settings, data, evaluator,
                                     template, secure=secure, group_size=DEFAULT_GROUP_SIZE,
                                     timeout_s=args.arm_timeout)
            else:
                arm = run_federated(name, model_dir, point_settings, data, evaluator,
                                    secure=secure, group_size=DEFAULT_GROUP_SIZE)
            rows.append(sweep_row(point, arm, local, central, point_settings))
            print(sweep_table(rows, local, central).splitlines()[-1], file=sys.stderr, flush=True)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return {
        "benchmark": "quality-sweep",
        "variant": variant.name,
        "command": " ".join(["python -m bench.quality", *sys.argv[1:]]),
        "peers": args.peers,
        "domains": data.domains,
        "total_steps_per_peer": total,
        "settings": asdict(settings),
        "sweep_arm": args.sweep_arm,
        "group_momentum_of_momentum_lever": momentum,
        "data": str(args.data) if args.data else "bundled demo shards (one domain per peer)",
        "public_set": public,
        "baselines": {"local_only": local, "centralised": central},
        "rows": rows,
        "total_wall_s": round(time.perf_counter() - started, 1),
        "machine": machine(),
        "_table": sweep_table(rows, local, central),
    }


def _progress(arm: str) -> None:
    print(f"quality: running {arm} ...", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--peers", type=int, default=4)
    parser.add_argument("--quick", action="store_true",
                        help="in-process federated arms, fewer steps (CI, about a minute)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--data", type=Path,
                        help="folder of NAME.train.jsonl + NAME.eval.jsonl pairs, one per peer")
    parser.add_argument("--rounds", type=int, help="override the variant's rounds")
    parser.add_argument("--local-steps", type=int, help="override the variant's steps per round")
    parser.add_argument("--lr", type=float, help="override the variant's lr (every arm)")
    parser.add_argument("--schedule", choices=("constant", "cosine", "linear"), default="constant",
                        help="lr schedule of every arm, decaying over rounds x local steps "
                             "([train] schedule and total_steps)")
    parser.add_argument("--fedprox-mu", type=float,
                        help="override the variant's FedProx mu (federated arms only)")
    parser.add_argument("--no-average-optimizer-state", action="store_true",
                        help="federated arms average the adapter only, not AdamW's moments "
                             "([federation] average_optimizer_state = false)")
    parser.add_argument("--freeze-lora-a", action="store_true",
                        help="federated arms: FFA-LoRA, A frozen and shared, only B averaged "
                             "([federation] freeze_lora_a = true)")
    parser.add_argument("--group-momentum", type=float, default=0.0,
                        help="federated arms: FedAvgM beta ([federation] group_momentum); in a "
                             f"sweep, the momentum lever's beta (default {DEFAULT_SWEEP_MOMENTUM})")
    parser.add_argument("--scaffold", action="store_true",
                        help="federated arms: SCAFFOLD control variates ([federation] scaffold)")
    parser.add_argument("--sweep-local-steps", metavar="N,N,...",
                        help="sweep: run the federated arm once per local_steps at --total-steps "
                             "optimiser steps per peer (e.g. 2,10,25,50)")
    parser.add_argument("--sweep-levers", default="none", metavar="LEVER,...",
                        help="sweep: levers to run at each local_steps, of "
                             + ", ".join(LEVER_NAMES) + ", or several joined by +")
    parser.add_argument("--sweep-arm", choices=("plain", "secure"), default="secure",
                        help="sweep: which federated arm (secure aggregation or plaintext)")
    parser.add_argument("--total-steps", type=int,
                        help="sweep: optimiser steps per peer (default rounds x local steps)")
    parser.add_argument("--public-share", type=float, default=0.0, metavar="S",
                        help="every arm mixes a shared public set into training at this share "
                             "of its examples ([data.alignment] share); 0: none")
    parser.add_argument("--public-rows", type=int, default=32, metavar="N",
                        help="demo data: fresh public rows per peer domain (default 32)")
    parser.add_argument("--public", type=Path, metavar="FILE",
                        help="the public set as JSONL {\"text\": ...} rows (needed with --data)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--secagg-protocol", choices=PROTOCOLS, default=PROTOCOL_NAME,
                        help="secure-aggregation protocol of the in-process secure arms "
                             "(default: the daemons' default)")
    parser.add_argument("--secagg-fields", type=int, default=None,
                        help="v3: values packed per BFV slot (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in this process")
    parser.add_argument("--arm-timeout", type=float, default=1800.0,
                        help="seconds each daemon arm may take (full variant)")
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="do not delete the temp dir")
    args = parser.parse_args(argv)
    for name in ("rounds", "local_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.lr is not None and not args.lr > 0:
        parser.error("--lr must be positive")
    if args.fedprox_mu is not None and not args.fedprox_mu >= 0:
        parser.error("--fedprox-mu must be >= 0")
    if not 0.0 <= args.group_momentum < 1.0:
        parser.error("--group-momentum must be in [0, 1)")
    if args.total_steps is not None and args.total_steps < 1:
        parser.error("--total-steps must be at least 1")
    if not 0.0 <= args.public_share < 1.0:
        parser.error("--public-share must be in [0, 1)")
    if args.public_rows < 1:
        parser.error("--public-rows must be at least 1")
    if args.public is not None and not args.public_share:
        parser.error("--public needs --public-share")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    try:
        result = run(args)
    except QualityBenchError as exc:
        print(f"quality benchmark: {exc}", file=sys.stderr)
        return 2
    text = result.pop("_table")
    print(text)
    if "rows" in result:
        print(f"\nvariant {result['variant']}, {result['peers']} peers, "
              f"{result['total_steps_per_peer']} steps per peer, {result['sweep_arm']} arm; "
              f"total {result['total_wall_s']} s; {result['machine']['cpu']}")
    else:
        print(f"\nvariant {result['variant']}, {result['peers']} peers, "
              f"{result['settings']['rounds']} rounds x {result['settings']['local_steps']} "
              f"steps; total {result['total_wall_s']} s; {result['machine']['cpu']}")
    versions = result["machine"]["versions"]
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if args.json is not None:
        args.json.write_text(json.dumps({**result, "table": text}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
