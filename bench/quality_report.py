"""Arm results, the summary ratios, the printed table, and the machine they ran on.

The ratios are defined once, here, so the JSON, the table and docs/results.md cannot
disagree about what "gap closed" means.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import torch

from .machine import cpu_model
from .quality_setup import Losses

TARGET_FED_OVER_CENTRAL = 1.03
TARGET_GAP_CLOSED = 0.80
TARGET_SECURE_OVER_PLAIN_WALL = 1.5


@dataclass
class ArmResult:
    """What one arm produced: each peer's final losses and what the arm cost."""

    name: str
    path: str  # "in-process" or "daemons": which code path trained and averaged
    per_peer: list[Losses]
    wall_s: float
    aggregation_s: float = 0.0
    bytes_per_peer_round: float = 0.0
    group_size: int | None = None
    protocol: str | None = None
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def union(self) -> float:
        """Mean over peers of each peer's union loss (every peer keeps its own adapter)."""
        return statistics.fmean(p.union for p in self.per_peer)

    def by_set(self) -> dict[str, float]:
        names = self.per_peer[0].by_set
        return {n: statistics.fmean(p.by_set[n] for p in self.per_peer) for n in names}

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "protocol": self.protocol,
            "group_size": self.group_size,
            "eval_loss_union": self.union,
            "eval_loss_by_set": self.by_set(),
            "eval_loss_union_per_peer": [p.union for p in self.per_peer],
            "wall_s": round(self.wall_s, 3),
            "aggregation_s": round(self.aggregation_s, 3),
            "bytes_per_peer_round": round(self.bytes_per_peer_round, 1),
            "note": self.note,
            **self.extra,
        }


def gap_closed(local: float, fed: float, central: float) -> float | None:
    """Share of the local-only → centralised union-loss gap the federation closes.

    1 is as good as pooling the data, 0 no better than training alone, < 0 worse than
    alone; ``None`` when the two references tie (there is no gap to close).
    """
    gap = local - central
    return (local - fed) / gap if gap != 0 else None


def summarise(arms: dict[str, ArmResult]) -> dict[str, Any]:
    """The four headline ratios, on the union eval loss of the secure gossip arm."""
    local, central = arms["local_only"].union, arms["centralised"].union
    fed = arms["fed_secure_gossip"].union
    summary: dict[str, Any] = {
        "fed_over_central": fed / central,
        "fed_over_local": fed / local,
        "gap_closed": gap_closed(local, fed, central),
        "secure_over_plain_wall": arms["fed_secure"].wall_s / arms["fed_plain"].wall_s,
        "secure_minus_plain_union_loss": arms["fed_secure"].union - arms["fed_plain"].union,
    }
    summary["targets"] = {
        "fed_over_central<=1.03": summary["fed_over_central"] <= TARGET_FED_OVER_CENTRAL,
        "gap_closed>=0.80": (summary["gap_closed"] is not None
                             and summary["gap_closed"] >= TARGET_GAP_CLOSED),
        "secure_over_plain_wall<=1.5":
            summary["secure_over_plain_wall"] <= TARGET_SECURE_OVER_PLAIN_WALL,
    }
    return summary


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    cpu = cpu_model()
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "python": sys.version.split()[0],
        "versions": {p: _version(p) for p in (
            "torch", "transformers", "peft", "tenseal", "libp2p", "numpy", "fedswarm")},
    }


def table(arms: dict[str, ArmResult], summary: dict[str, Any], domains: list[str]) -> str:
    """A fixed-width table: one row per arm, one column per eval set."""
    sets = [*domains, *(["eval_all"] if "eval_all" in next(iter(arms.values())).by_set()
                        else [])]
    head = f"{'arm':<18} {'path':<10} " + " ".join(f"{s[:9]:>9}" for s in sets)
    head += f" {'union':>7} {'wall s':>7} {'agg s':>6} {'KB/peer/rnd':>11}"
    lines = [head, "-" * len(head)]
    for name, arm in arms.items():
        by_set = arm.by_set()
        row = f"{name:<18} {arm.path:<10} " + " ".join(f"{by_set[s]:>9.4f}" for s in sets)
        row += (f" {arm.union:>7.4f} {arm.wall_s:>7.1f} {arm.aggregation_s:>6.1f}"
                f" {arm.bytes_per_peer_round / 1024:>11.1f}")
        lines.append(row)
    gap = summary["gap_closed"]
    lines += [
        "",
        f"fed/central union loss:  {summary['fed_over_central']:.4f}  (target <= 1.03)",
        f"fed/local-only loss:     {summary['fed_over_local']:.4f}",
        f"gap closed:              {'n/a' if gap is None else f'{gap:.1%}'}  (target >= 80%)",
        f"secure/plain wall time:  {summary['secure_over_plain_wall']:.3f}  (target <= 1.5)",
        f"secure - plain loss:     {summary['secure_minus_plain_union_loss']:+.5f}",
    ]
    return "\n".join(lines)
