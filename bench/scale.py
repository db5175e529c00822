"""Scale: many real daemons, one network namespace each, secure aggregation on.

    python -m bench.scale --peers 32 [--arms clean,faulty] [--json out.json]

Issue #27's first measurement. Every daemon is a real ``fedswarm run`` process in its
own namespace (:mod:`.netns_federation`), with the bundled tiny model, protocol v3
secure aggregation and rotating groups of 4. A run trains for ``--rounds`` rounds, the
last ``--final-averaging`` of which only average, and is judged on:

* ``rounds_to_consensus``: how many averaging-only rounds it took until every pair of
  daemons' adapters differs by less than 1e-3 of the adapter's largest value (the
  bound the issue sets is ⌈log₄ N⌉ + 2 — 5 for 32 daemons);
* ``aborted_group_share``: the share of daemon-rounds that ended ``aborted``, with the
  reasons the daemons wrote;
* per round: wall time, the median daemon's train / aggregate / apply seconds, bytes
  per daemon; per daemon: CPU seconds and peak RSS of its process group.

The ``faulty`` arm puts 50 ms and 1 % loss on every link and kills ``kill -9`` 10 % of
the daemons (at least one) during a training round, restarting them 20 s later.

Adapters are read from each daemon's checkpoint folder while it runs (a daemon keeps
its two newest rounds), so the spread of every averaging-only round is measured, not
only the last. Needs root; exits 2 with the reason where namespaces cannot be made.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .group_rss import PROC, field_kb
from .netns_federation import NetnsFederation, NetnsUnavailableError, unavailable_reason
from .quality_report import machine

CONSENSUS_SPREAD = 1e-3
KILL_SHARE = 0.10
RESTART_AFTER_S = 20.0


@dataclass
class ArmSettings:
    peers: int
    rounds: int
    final_averaging: int
    group_size: int = 4
    local_steps: int = 2
    round_deadline_s: float = 90.0
    faulty: bool = False
    seed: int = 0
    #: [federation] heartbeat_s (the daemon's default); peer_timeout_s follows at 5 beats.
    #: Above 17 members the daemon stretches both so each hears at most 8 beats a second.
    heartbeat_s: float = 2.0


@dataclass
class ProcessUsage:
    """The largest CPU time and RSS seen for one daemon's process group."""

    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0  # VmHWM of its largest process: counts shared library pages
    peak_private_mb: float = 0.0  # RssAnon summed over the group: what 32 of them add up to


@dataclass
class Watcher:
    """Polls every daemon's checkpoints and process group in a thread of its own."""

    federation: NetnsFederation
    adapters: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    usage: dict[int, ProcessUsage] = field(default_factory=dict)
    # CPU of process groups that ended (a killed daemon), so a restart does not erase it
    cpu_before_restart: dict[int, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scale-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def note_restart(self, i: int) -> None:
        usage = self.usage.get(i)
        if usage is not None:
            self.cpu_before_restart[i] = self.cpu_before_restart.get(i, 0.0) + usage.cpu_s
            usage.cpu_s = 0.0

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            running: dict[int, int] = {}  # process group (the daemon's pid) -> peer
            for i, peer in enumerate(self.federation.peers):
                self._read_checkpoints(i, peer.state_dir / "checkpoint")
                if peer.process is not None and peer.process.poll() is None:
                    running[peer.process.pid] = i
            self._read_usage(running)

    def _read_checkpoints(self, i: int, root: Path) -> None:
        from fedswarm.learning.adapter_vector import flatten_state
        from safetensors.torch import load_file

        if not root.is_dir():
            return
        for folder in root.iterdir():
            name = folder.name
            if not name.startswith("round-"):
                continue
            try:
                number = int(name.split("-", 1)[1])
            except ValueError:
                continue
            if (i, number) in self.adapters:
                continue
            path = folder / "adapter" / "adapter_model.safetensors"
            if not (folder / "meta.json").exists() or not path.exists():
                continue  # still being written; the next poll sees it whole
            try:
                self.adapters[(i, number)] = flatten_state(load_file(str(path)))[0]
            except Exception:  # pruned or half-written under us: the next poll reads it
                continue

    def _read_usage(self, groups: dict[int, int]) -> None:
        """One pass over /proc for every daemon: each process's group says whose it is."""
        ticks = os.sysconf("SC_CLK_TCK")
        totals = {i: [0.0, 0, 0] for i in groups.values()}  # cpu s, VmHWM kB, RssAnon kB
        for entry in PROC.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                i = groups.get(int(fields[2]))  # field 5: process group
                if i is None:
                    continue
                status = (entry / "status").read_text()
                cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
            except (OSError, ValueError, IndexError):
                continue
            total = totals[i]
            total[0] += cpu
            total[1] = max(total[1], field_kb(status, "VmHWM"))
            total[2] += field_kb(status, "RssAnon")
        for i, (cpu_s, rss_kb, anon_kb) in totals.items():
            usage = self.usage.setdefault(i, ProcessUsage())
            usage.cpu_s = max(usage.cpu_s, cpu_s)
            usage.peak_rss_mb = max(usage.peak_rss_mb, rss_kb / 1024)
            usage.peak_private_mb = max(usage.peak_private_mb, anon_kb / 1024)

    def cpu_total(self, i: int) -> float:
        usage = self.usage.get(i, ProcessUsage())
        return self.cpu_before_restart.get(i, 0.0) + usage.cpu_s


def relative_spread(vectors: list[np.ndarray]) -> float:
    """Largest pairwise |a − b| over the largest |a|: 0 when all daemons agree exactly."""
    scale = max(float(np.max(np.abs(v))) for v in vectors) or 1.0
    stacked = np.stack(vectors)
    return float(np.max(stacked.max(axis=0) - stacked.min(axis=0))) / scale


def _read_rounds(federation: NetnsFederation) -> list[list[dict[str, Any]]]:
    from fedswarm.daemon.state import StateStore

    out = []
    for peer in federation.peers:
        store = StateStore.open(peer.state_dir)
        try:
            out.append([r.as_dict() for r in store.rounds(limit=1_000_000)])
        finally:
            store.close()
    return out


def _round_table(logs: list[list[dict[str, Any]]], rounds: int) -> list[dict[str, Any]]:
    table = []
    for number in range(1, rounds + 1):
        records = [r for log in logs for r in log if r["round"] == number]
        if not records:
            continue
        statuses: dict[str, int] = {}
        for r in records:
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        finished = [r["finished_at"] for r in records if r["finished_at"]]
        started = [r["started_at"] for r in records if r["started_at"]]

        def median(key: str, rows: list[dict[str, Any]] = records) -> float | None:
            values = [float(r[key]) for r in rows if r.get(key) is not None]
            return round(statistics.median(values), 2) if values else None

        moved = [(r.get("bytes_sent") or 0) + (r.get("bytes_received") or 0) for r in records]
        table.append(
            {
                "round": number,
                "daemons": len(records),
                "statuses": statuses,
                "wall_s": round(max(finished) - min(started), 1) if finished and started else None,
                "train_s": median("train_s"),
                "aggregate_s": median("aggregate_s"),
                "apply_s": median("apply_s"),
                "bytes_per_daemon": int(statistics.mean(moved)) if moved else 0,
                "abort_reasons": sorted(
                    {
                        str(r.get("note"))
                        for r in records
                        if r["status"] == "aborted" and r.get("note")
                    }
                ),
            }
        )
    return table


def run_arm(settings: ArmSettings, workdir: Path) -> dict[str, Any]:
    overrides = {
        "federation": {
            "final_averaging_rounds": settings.final_averaging,
            "heartbeat_s": settings.heartbeat_s,
            "peer_timeout_s": 5 * settings.heartbeat_s,
            "wait_for_peers_s": 600.0,
        }
    }
    fed = NetnsFederation(
        workdir,
        settings.peers,
        settings.rounds,
        group_size=settings.group_size,
        local_steps=settings.local_steps,
        batch_size=4,
        round_deadline_s=settings.round_deadline_s,
        seed=settings.seed,
        overrides=overrides,
    )
    watcher = Watcher(fed)
    started = time.monotonic()
    killed: list[int] = []
    up_s: float | None = None
    with fed:
        watcher.start()
        if settings.faulty:
            for i in range(settings.peers):
                fed.impair(i, delay_ms=50, loss_pct=1)
        everyone = list(range(settings.peers))
        fed.wait_for(everyone, 1, timeout_s=1200, poll_s=3.0)
        up_s = time.monotonic() - started
        if settings.faulty:
            killed = list(range(0, settings.peers, round(1 / KILL_SHARE)))[
                : max(1, math.floor(settings.peers * KILL_SHARE))
            ]
            for i in killed:
                fed.kill(i)
            time.sleep(RESTART_AFTER_S)
            for i in killed:
                watcher.note_restart(i)
                fed.restart(i)
        budget = settings.rounds * (settings.round_deadline_s * 3 + 60)
        finished = fed.wait_for(everyone, settings.rounds, timeout_s=budget, poll_s=3.0)
        time.sleep(3.0)  # the last checkpoint's files reach the watcher
        watcher.stop()
        last_seen = fed.rounds_completed()
    wall_s = time.monotonic() - started
    logs = _read_rounds(fed)
    integrity = fed.integrity()

    first_averaging = settings.rounds - settings.final_averaging + 1
    spreads = []
    for number in range(first_averaging, settings.rounds + 1):
        vectors = [
            watcher.adapters[(i, number)]
            for i in range(settings.peers)
            if (i, number) in watcher.adapters
        ]
        spreads.append(
            {
                "round": number,
                "daemons_read": len(vectors),
                "relative_spread": relative_spread(vectors) if len(vectors) >= 2 else None,
            }
        )
    to_consensus = next(
        (
            k + 1
            for k, s in enumerate(spreads)
            if s["relative_spread"] is not None
            and s["daemons_read"] == settings.peers
            and s["relative_spread"] < CONSENSUS_SPREAD
        ),
        None,
    )
    daemon_rounds = [r for log in logs for r in log if r["status"] != "initial"]
    aborted = [r for r in daemon_rounds if r["status"] == "aborted"]
    reasons: dict[str, int] = {}
    for r in aborted:
        reasons[str(r.get("note") or "?")] = reasons.get(str(r.get("note") or "?"), 0) + 1
    cpu = [watcher.cpu_total(i) for i in range(settings.peers)]
    rss = [watcher.usage.get(i, ProcessUsage()).peak_rss_mb for i in range(settings.peers)]
    private = [watcher.usage.get(i, ProcessUsage()).peak_private_mb for i in range(settings.peers)]
    return {
        "arm": "faulty" if settings.faulty else "clean",
        "peers": settings.peers,
        "rounds": settings.rounds,
        "averaging_only_rounds": settings.final_averaging,
        "group_size": settings.group_size,
        "finished_all_rounds": finished,
        "last_finished_round_per_daemon": last_seen,
        "wall_s": round(wall_s, 1),
        "first_round_done_s": None if up_s is None else round(up_s, 1),
        "killed_and_restarted": killed,
        "faults": fed.faults_as_dicts(),
        "latency_loss_via": "tc netem" if fed.net.netem else "tun switch",
        "switch": fed.net.switch.counters.as_dict(),
        "rounds_to_consensus": to_consensus,
        "consensus_bound": math.ceil(math.log(settings.peers, 4)) + 2,
        "spread_by_averaging_round": spreads,
        "aborted_group_share": (
            round(len(aborted) / len(daemon_rounds), 4) if daemon_rounds else None
        ),
        "abort_reasons": reasons,
        "per_round": _round_table(logs, settings.rounds),
        "daemon_cpu_s": {"median": round(statistics.median(cpu), 1), "max": round(max(cpu), 1)},
        "daemon_peak_rss_mb": {
            "median": round(statistics.median(rss), 1),
            "max": round(max(rss), 1),
        },
        "daemon_peak_private_mb": {
            "median": round(statistics.median(private), 1),
            "max": round(max(private), 1),
            "sum": round(sum(private), 1),
        },
        "integrity_ok": all(p.ok for p in integrity),
        "integrity_problems": {p.org: p.problems for p in integrity if p.problems},
    }


def print_table(result: dict[str, Any]) -> None:
    for arm in result["arms"]:
        print(
            f"\nscale/{arm['arm']}: {arm['peers']} daemons, groups of {arm['group_size']}, "
            f"{arm['rounds']} rounds ({arm['averaging_only_rounds']} averaging-only), "
            f"{arm['wall_s']} s wall, all finished: {arm['finished_all_rounds']}"
        )
        print(
            f"{'round':>5} {'wall s':>7} {'train':>6} {'agg':>6} {'apply':>6} "
            f"{'kB/daemon':>10}  statuses"
        )
        for row in arm["per_round"]:
            print(
                f"{row['round']:>5} {row['wall_s']!s:>7} {row['train_s']!s:>6} "
                f"{row['aggregate_s']!s:>6} {row['apply_s']!s:>6} "
                f"{row['bytes_per_daemon'] / 1000:>10.1f}  {row['statuses']}"
            )
        spreads = ", ".join(
            f"r{s['round']}: {s['relative_spread']:.2e} ({s['daemons_read']})"
            if s["relative_spread"] is not None
            else f"r{s['round']}: -"
            for s in arm["spread_by_averaging_round"]
        )
        print(f"spread per averaging-only round: {spreads}")
        print(
            f"rounds_to_consensus {arm['rounds_to_consensus']} (bound "
            f"{arm['consensus_bound']}); aborted_group_share {arm['aborted_group_share']}; "
            f"daemon CPU s {arm['daemon_cpu_s']}; peak RSS MB {arm['daemon_peak_rss_mb']}; "
            f"private MB {arm['daemon_peak_private_mb']}; "
            f"integrity {'OK' if arm['integrity_ok'] else arm['integrity_problems']}"
        )
        switch = arm.get("switch")
        if switch:
            print(
                f"wire (tun switch): {switch['forwarded']} packets, late {switch['late']}, "
                f"latest {switch['late_max_s']} s; dropped {switch['dropped_loss']} (loss) "
                f"{switch['dropped_cut']} (cut)"
            )
        if arm["abort_reasons"]:
            print(f"abort reasons: {arm['abort_reasons']}")
    print(f"\nmachine: {result['machine']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--peers", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument(
        "--final-averaging", type=int, default=5, help="the last rounds only average (default 5)"
    )
    parser.add_argument("--arms", default="clean,faulty", help="clean, faulty or both")
    parser.add_argument("--deadline", type=float, default=90.0, help="round deadline, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heartbeat", type=float, default=2.0,
                        help="[federation] heartbeat_s of every daemon (peer_timeout_s: 5x)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--workdir", type=Path, help="keep daemon folders here (default: temp)")
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason is not None:
        print(f"bench.scale: {reason}", file=sys.stderr)
        return 2
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not arms or any(a not in ("clean", "faulty") for a in arms):
        parser.error("--arms takes clean, faulty or clean,faulty")
    results = []
    for arm in arms:
        settings = ArmSettings(
            peers=args.peers,
            rounds=args.rounds,
            final_averaging=args.final_averaging,
            round_deadline_s=args.deadline,
            faulty=arm == "faulty",
            seed=args.seed,
            heartbeat_s=args.heartbeat,
        )
        root = args.workdir / arm if args.workdir else None
        try:
            if root is not None:
                root.mkdir(parents=True, exist_ok=True)
                results.append(run_arm(settings, root))
            else:
                with tempfile.TemporaryDirectory(prefix="fedswarm-scale-") as tmp:
                    results.append(run_arm(settings, Path(tmp)))
        except NetnsUnavailableError as exc:
            print(f"bench.scale: {exc}", file=sys.stderr)
            return 2
    result = {"benchmark": "scale", "arms": results, "machine": machine()}
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
