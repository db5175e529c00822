"""Convergence of Moshpit grouping + carried-weight averaging, simulated in one process.

Uses the daemon's real ``plan_groups`` (through ``GroupAgreement``, with every peer's
view equal to the full membership) and the real ``weighted_average`` /
``carried_weight`` rules. No crypto or network: secure aggregation computes the same
group average, so it does not change convergence.

Model: N peers start with random vectors and random sample counts (their initial
mass). Each round, every peer independently drops out with probability ``dropout``:
a dropped peer sends and answers nothing, keeps its vector and mass, and its planned
group averages without it (or dissolves below 3 members; a dropped leader dissolves
its group, as in the real protocol). The target is the global sample-weighted
average of the initial vectors. Deviation after a round is

    max_i ||x_i - x_target||_inf / max_i ||x_i(0) - x_target||_inf

the fraction of the initial disagreement still left, whatever the vectors' scale.

    python -m bench.gossip --group 4 --rounds 10 --json out.json \
        --dropout 0,0.1,0.3 --sizes 16,64,256 --dim 1000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fedswarm.federation.averaging.weighting import carried_weight, weighted_average
from fedswarm.federation.groups.agreement import AgreementConfig, Formed, GroupAgreement, Outgoing
from fedswarm.federation.groups.plan import grid_shape

from .machine import cpu_model

TARGET = 1e-3


@dataclass(frozen=True)
class SimulationConfig:
    n_peers: int
    group_size: int = 4
    rounds: int = 10
    dim: int = 100
    dropout: float = 0.0
    seed: int = 0


@dataclass
class SimulationResult:
    config: SimulationConfig
    deviations: list[float] = field(default_factory=list)
    """Relative deviation of the worst peer after each round (index 0 = after round 0)."""
    median_deviations: list[float] = field(default_factory=list)
    """The same for the median peer: how far the bulk of the federation is."""
    peers_aggregated: list[int] = field(default_factory=list)
    groups_formed: list[int] = field(default_factory=list)
    mass_drift: float = 0.0
    """Largest relative change of total mass seen (should be rounding noise only)."""

    def rounds_to(self, threshold: float = TARGET) -> int | None:
        """Rounds needed until the deviation first drops below ``threshold``; None if never."""
        for index, deviation in enumerate(self.deviations):
            if deviation < threshold:
                return index + 1
        return None


def _peer_ids(n_peers: int) -> list[str]:
    return [f"peer-{index:04d}" for index in range(n_peers)]


def _run_agreement(
    peers: Sequence[str], live: set[str], round: int, group_size: int
) -> list[Formed]:
    """Run every live peer's real agreement state machine with instant, lossless delivery."""
    config = AgreementConfig(invite_window=1.0, final_grace=1.0)
    agreements = {
        peer: GroupAgreement(peer, round, peers, 0.0, group_size=group_size, config=config)
        for peer in peers
        if peer in live
    }
    queue: deque[tuple[str, Outgoing]] = deque(
        (peer, out) for peer, agreement in agreements.items() for out in agreement.start()
    )

    def deliver(now: float) -> None:
        while queue:
            sender, outgoing = queue.popleft()
            for recipient in outgoing.recipients:
                if recipient in agreements:
                    replies = agreements[recipient].receive(outgoing.message, sender, now)
                    queue.extend((recipient, reply) for reply in replies)

    deliver(0.5)
    for peer, agreement in agreements.items():
        queue.extend((peer, out) for out in agreement.poll(1.0))
    deliver(1.5)
    for agreement in agreements.values():
        agreement.poll(2.0)
    formed: dict[tuple[str, ...], Formed] = {}
    for agreement in agreements.values():
        outcome = agreement.outcome
        if isinstance(outcome, Formed):
            formed[outcome.members] = outcome
    return sorted(formed.values(), key=lambda group: group.members)


def simulate(config: SimulationConfig) -> SimulationResult:
    """Run ``config.rounds`` rounds and record the deviation after each."""
    rng = np.random.default_rng(config.seed)
    peers = _peer_ids(config.n_peers)
    vectors = {
        peer: rng.normal(0.0, 1.0, config.dim).astype(np.float32) for peer in peers
    }
    mass = {peer: float(rng.integers(10, 10_000)) for peer in peers}
    target = weighted_average([vectors[p] for p in peers], [mass[p] for p in peers]).astype(
        np.float64
    )
    initial_spread = max(
        float(np.max(np.abs(vectors[p].astype(np.float64) - target))) for p in peers
    )
    total_mass = math.fsum(mass.values())
    result = SimulationResult(config)
    for round in range(config.rounds):
        live = {peer for peer in peers if rng.random() >= config.dropout}
        groups = _run_agreement(peers, live, round, config.group_size)
        for group in groups:
            members = group.members
            average = weighted_average([vectors[p] for p in members], [mass[p] for p in members])
            shared = carried_weight([mass[p] for p in members])
            for peer in members:
                vectors[peer] = average
                mass[peer] = shared
        per_peer = [
            float(np.max(np.abs(vectors[p].astype(np.float64) - target))) / initial_spread
            for p in peers
        ]
        result.deviations.append(max(per_peer))
        result.median_deviations.append(float(np.median(per_peer)))
        result.groups_formed.append(len(groups))
        result.peers_aggregated.append(sum(len(group.members) for group in groups))
        drift = abs(math.fsum(mass.values()) - total_mass) / total_mass
        result.mass_drift = max(result.mass_drift, drift)
    return result


def _machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
    }


def _parse_list(text: str, kind: type) -> list[Any]:
    return [kind(item) for item in text.split(",") if item.strip()]


def run_benchmark(
    group_size: int, rounds: int, sizes: Sequence[int], dropouts: Sequence[float], dim: int,
    seed: int,
) -> dict[str, Any]:
    runs = []
    for n_peers in sizes:
        for dropout in dropouts:
            config = SimulationConfig(n_peers, group_size, rounds, dim, dropout, seed)
            result = simulate(config)
            runs.append(
                {
                    "n_peers": n_peers,
                    "dropout": dropout,
                    "grid": list(grid_shape(n_peers, group_size).dims),
                    "log_g_n": math.ceil(math.log(n_peers, group_size)),
                    "rounds_to_1e-3": result.rounds_to(TARGET),
                    "deviation_per_round": result.deviations,
                    "median_deviation_per_round": result.median_deviations,
                    "peers_aggregated_per_round": result.peers_aggregated,
                    "mass_drift": result.mass_drift,
                }
            )
    no_dropout = {
        str(run["n_peers"]): run["rounds_to_1e-3"] for run in runs if run["dropout"] == 0.0
    }
    return {
        "benchmark": "gossip-convergence",
        "machine": _machine(),
        "parameters": {
            "group_size": group_size,
            "rounds": rounds,
            "dim": dim,
            "seed": seed,
            "metric": "max_i ||x_i - x_target||_inf / max_i ||x_i(0) - x_target||_inf",
        },
        "runs": runs,
        "summary": {"rounds_to_1e-3": no_dropout},
    }


def format_table(report: dict[str, Any]) -> str:
    rounds = report["parameters"]["rounds"]
    header = ["N", "drop", "grid", "ceil(log_g N)", "rounds<1e-3"] + [
        f"r{index + 1}" for index in range(rounds)
    ]
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    for run in report["runs"]:
        cells = [
            str(run["n_peers"]),
            f"{run['dropout']:.0%}",
            "x".join(str(side) for side in run["grid"]),
            str(run["log_g_n"]),
            str(run["rounds_to_1e-3"]) if run["rounds_to_1e-3"] is not None else "-",
        ] + [f"{value:.1e}" for value in run["deviation_per_round"]]
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", type=int, default=4, help="target group size g")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--sizes", default="16,64,256", help="comma-separated peer counts")
    parser.add_argument("--dropout", default="0,0.1,0.3", help="comma-separated probabilities")
    parser.add_argument("--dim", type=int, default=1000, help="vector length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the JSON report here")
    args = parser.parse_args(argv)
    sizes = _parse_list(args.sizes, int)
    dropouts = _parse_list(args.dropout, float)
    if args.group < 3 or args.rounds < 1 or args.dim < 1 or any(n < 1 for n in sizes):
        parser.error("need --group >= 3, --rounds >= 1, --dim >= 1 and sizes >= 1")
    if any(not 0.0 <= p < 1.0 for p in dropouts):
        parser.error("dropout probabilities must lie in [0, 1)")
    report = run_benchmark(args.group, args.rounds, sizes, dropouts, args.dim, args.seed)
    text = json.dumps(report, indent=2)
    print(text)
    print()
    print(format_table(report))
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
