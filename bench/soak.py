"""Soak: a namespaced federation runs rounds for N minutes under random faults.

    python -m bench.soak --peers 8 --minutes 10 [--json out.json] [--secure]

Every ``--fault-every`` seconds one fault is drawn at random — kill -9 (restarted a
little later), link down (healed later), latency+loss, a tc tbf bandwidth cap, SIGSTOP
past the round deadline — and undone before the next one. At the end every daemon is
stopped and its state checked (SQLite integrity, checkpoint loads and is finite and
matches the database, every round accounted for). Prints JSON and a table, with the
machine and versions. Needs root; exits 2 with the reason where namespaces cannot be
made.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from fedswarm.secagg.params import PROTOCOL_NAME

from .netns_federation import NetnsFederation, NetnsUnavailableError, unavailable_reason

FAULTS = ("kill", "partition", "latency_loss", "bandwidth", "pause")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("fedswarm", "libp2p", "torch", "tenseal"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def run_soak(
    peers: int, minutes: float, *, fault_every_s: float, secure: bool, seed: int,
    workdir: Path,
) -> dict[str, Any]:
    rng = random.Random(seed)
    deadline_s = 20.0
    fed = NetnsFederation(
        workdir, peers, 0,
        secure_aggregation=PROTOCOL_NAME if secure else "none",
        group_size=min(4, peers), local_steps=2, batch_size=4, round_deadline_s=deadline_s,
        seed=seed, overrides={"federation": {"wait_for_peers_s": 120.0, "peer_timeout_s": 5.0}},
    )
    started = time.monotonic()
    with fed:
        fed.wait_for(list(range(peers)), 1, timeout_s=300)
        end = time.monotonic() + minutes * 60
        while time.monotonic() < end:
            victim = rng.randrange(peers)
            kind = rng.choice(FAULTS)
            hold = min(rng.uniform(5, 2 * deadline_s), max(end - time.monotonic(), 1))
            if kind == "kill":
                fed.kill(victim)
                time.sleep(hold)
                fed.restart(victim)
            elif kind == "partition":
                fed.partition(victim)
                time.sleep(hold)
                fed.heal(victim)
            elif kind == "latency_loss":
                fed.impair(victim, delay_ms=rng.choice([20, 50, 100]), loss_pct=rng.choice([1, 3]))
                time.sleep(hold)
                fed.impair(victim, delay_ms=0, loss_pct=0)
            elif kind == "bandwidth":
                fed.limit_bandwidth(victim, rng.choice([2, 10]))
                time.sleep(hold)
                fed.limit_bandwidth(victim, None)
            else:  # paused past the round deadline
                fed.pause(victim)
                time.sleep(deadline_s + 5)
                fed.resume(victim)
            time.sleep(max(min(fault_every_s, end - time.monotonic()), 0))
        last_seen = fed.rounds_completed()
    integrity = fed.integrity()
    rounds = {"complete": 0, "local_only": 0, "aborted": 0, "other": 0}
    for peer in integrity:
        for status, n in peer.rounds.items():
            if status == "initial":
                continue
            rounds[status if status in rounds else "other"] += n
    return {
        "benchmark": "soak",
        "peers": peers,
        "minutes": minutes,
        "secure_aggregation": PROTOCOL_NAME if secure else "none",
        "wall_s": round(time.monotonic() - started, 1),
        "faults_injected": fed.fault_counts(),
        "faults": fed.faults_as_dicts(),
        "rounds_completed": rounds["complete"],
        "rounds_local_only": rounds["local_only"],
        "rounds_aborted": rounds["aborted"],
        "rounds_unfinished": rounds["other"],
        "rounds_completed_per_peer_at_end": last_seen,
        "latency_loss_via": "tc netem" if fed.net.netem else "tun switch (no sch_netem here)",
        "switch": vars(fed.net.switch.counters),
        "integrity_ok": all(p.ok for p in integrity),
        "integrity": [vars(p) for p in integrity],
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "versions": _versions(),
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"\nsoak: {result['peers']} peers, {result['minutes']} min, "
          f"secure aggregation {result['secure_aggregation']}, {result['wall_s']} s wall")
    print(f"{'organisation':<24} {'complete':>8} {'local':>6} {'aborted':>7} {'ckpt':>5} "
          f"{'db':>4}  problems")
    for p in result["integrity"]:
        print(f"{p['org']:<24} {p['rounds'].get('complete', 0):>8} "
              f"{p['rounds'].get('local_only', 0):>6} {p['rounds'].get('aborted', 0):>7} "
              f"{p['checkpoint_round']!s:>5} {'ok' if p['database_ok'] else 'BAD':>4}  "
              f"{'; '.join(p['problems']) or '-'}")
    print("faults: " + ", ".join(f"{k} x{v}" for k, v in result["faults_injected"].items()))
    print(f"integrity: {'OK' if result['integrity_ok'] else 'PROBLEMS'}; latency/loss via "
          f"{result['latency_loss_via']}; {result['versions']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--peers", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--fault-every", type=float, default=15.0,
                        help="seconds between one fault's end and the next one's start")
    parser.add_argument("--secure", action="store_true", help="BFV secure aggregation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--workdir", type=Path, help="keep daemon folders here (default: temp)")
    args = parser.parse_args(argv)
    if args.peers < 3 or args.minutes <= 0:
        parser.error("--peers must be >= 3 and --minutes > 0")
    reason = unavailable_reason()
    if reason is not None:
        print(f"soak: cannot run here: {reason}", file=sys.stderr)
        return 2
    try:
        if args.workdir is not None:
            result = run_soak(args.peers, args.minutes, fault_every_s=args.fault_every,
                              secure=args.secure, seed=args.seed, workdir=args.workdir)
        else:
            with tempfile.TemporaryDirectory(prefix="fedswarm-soak-") as tmp:
                result = run_soak(args.peers, args.minutes, fault_every_s=args.fault_every,
                                  secure=args.secure, seed=args.seed, workdir=Path(tmp))
    except NetnsUnavailableError as exc:
        print(f"soak: network setup failed: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in result.items() if k != "faults"}, indent=1, default=str))
    print_table(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0 if result["integrity_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
