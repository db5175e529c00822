"""``--sweep-local-steps``: federated quality against how rarely members average.

Real consortia train tens to hundreds of steps between rounds; non-IID data then pulls
members apart (client drift) and one average no longer undoes it. The sweep holds the
optimiser steps per peer fixed (``--total-steps``) and splits them into
``total / local_steps`` rounds, for each ``local_steps`` and each lever:

  none                 plain averaging (lora_avg's defaults)
  freeze_a             [federation] freeze_lora_a = true (FFA-LoRA)
  momentum             [federation] group_momentum = --group-momentum (FedAvgM)
  scaffold             [federation] scaffold = true (control variates)
  A+B                  several levers together, e.g. freeze_a+momentum

The baselines run once: with a constant learning rate, ``train(25)`` four times is the
same run as ``train(2)`` fifty times, so local-only and centralised do not depend on the
split. Each row reports fed/central and gap closed against them, and the bytes one peer
sent over the whole run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .quality_report import ArmResult
from .quality_setup import QualityBenchError, RunSettings

LEVER_NAMES = ("none", "freeze_a", "momentum", "scaffold")


@dataclass(frozen=True)
class SweepPoint:
    """One federated run of the sweep: how often it averages and with which lever."""

    local_steps: int
    rounds: int
    lever: str


def sweep_points(total_steps: int, local_steps: list[int], levers: list[str]) -> list[SweepPoint]:
    """Every (local_steps, lever) pair; each ``local_steps`` must divide ``total_steps``."""
    unknown = [lever for lever in levers
               if lever == "" or any(part not in LEVER_NAMES for part in lever.split("+"))]
    if unknown:
        raise QualityBenchError(f"--sweep-levers: unknown {unknown}; expected {LEVER_NAMES}")
    points = []
    for steps in local_steps:
        if steps < 1 or total_steps % steps:
            raise QualityBenchError(f"--sweep-local-steps: {steps} does not divide the "
                                    f"{total_steps} optimiser steps per peer (--total-steps)")
        points += [SweepPoint(steps, total_steps // steps, lever) for lever in levers]
    return points


def settings_for(base: RunSettings, point: SweepPoint, momentum: float) -> RunSettings:
    """``base`` with the point's split and lever."""
    parts = point.lever.split("+")
    return replace(base, rounds=point.rounds, local_steps=point.local_steps,
                   freeze_lora_a="freeze_a" in parts, scaffold="scaffold" in parts,
                   group_momentum=momentum if "momentum" in parts else 0.0)


def sweep_row(point: SweepPoint, arm: ArmResult, local: float, central: float,
              settings: RunSettings) -> dict[str, Any]:
    """One row of the sweep: the arm's union loss against the two baselines."""
    gap = local - central
    bytes_run = arm.extra.get("bytes_per_peer_run", arm.bytes_per_peer_round * point.rounds)
    return {
        "local_steps": point.local_steps,
        "rounds": point.rounds,
        "lever": point.lever,
        "freeze_lora_a": settings.freeze_lora_a,
        "group_momentum": settings.group_momentum,
        "scaffold": settings.scaffold,
        "arm": arm.name,
        "path": arm.path,
        "eval_loss_union": arm.union,
        "fed_over_central": arm.union / central,
        "gap_closed": (local - arm.union) / gap if gap != 0 else None,
        "bytes_per_peer_run": bytes_run,
        "wall_s": round(arm.wall_s, 1),
    }


def sweep_table(rows: list[dict[str, Any]], local: float, central: float) -> str:
    """Fixed-width table of the sweep rows, baselines first."""
    width = max([18, *(len(row["lever"]) for row in rows)])
    head = (f"{'steps':>5} {'rounds':>6} {'lever':<{width}} {'union':>7} {'fed/cen':>7} "
            f"{'gap':>6} {'MB/peer':>8} {'wall s':>7}")
    lines = [f"local_only union {local:.4f}   centralised union {central:.4f}", "",
             head, "-" * len(head)]
    for row in rows:
        gap = row["gap_closed"]
        lines.append(
            f"{row['local_steps']:>5} {row['rounds']:>6} {row['lever']:<{width}} "
            f"{row['eval_loss_union']:>7.4f} {row['fed_over_central']:>7.4f} "
            f"{'n/a' if gap is None else f'{gap:.1%}':>6} "
            f"{row['bytes_per_peer_run'] / 1e6:>8.2f} {row['wall_s']:>7.1f}")
    return "\n".join(lines)


def parse_int_list(text: str) -> list[int]:
    """``"2,10,25"`` -> ``[2, 10, 25]``; ``QualityBenchError`` on anything else."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise QualityBenchError(f"expected comma-separated integers, got {text!r}") from None

