"""Group-level DP's utility cost: bench.quality's quick shape, secure arm, with and without noise.

    python -m bench.group_dp [--noise 0.5,2] [--clip 0.5] [--colluders 0]

Why this shape: it is the in-process federation bench.quality measures secure
aggregation with (4 demo peers, one group of all four, 10 rounds of 2 steps), so the
only difference between arms is the clipped change and the noise each member adds inside
secure aggregation. Per noise level it prints the union eval loss, the effective noise
multiplier the accountant saw, ε for one round and for all rounds (Opacus RDP, δ 1e-5),
and the median norm of the members' changes before clipping (is the clip binding?).
JSON on stdout, a table on stderr.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from fedswarm.daemon.demo.local_federation import demo_model_cache_dir
from fedswarm.federation.averaging.group_dp import GroupPrivacy
from fedswarm.federation.modes.lora_avg import member_vector
from fedswarm.learning.demo_assets import build_demo_model
from fedswarm.learning.group_privacy import GroupBudget
from fedswarm.learning.privacy import Spend, epsilon_of
from fedswarm.learning.trainer import LocalTrainer
from fedswarm.secagg.distributed_dp import GroupNoise
from fedswarm.secagg.params import SecAggParams

from .quality import QUICK
from .quality_inprocess import FederatedArm, GroupOutcome
from .quality_report import machine
from .quality_setup import BenchData, Evaluator, RunSettings, demo_data

DELTA = 1e-5
MIN_SURVIVORS = 3


class GroupDPArm(FederatedArm):
    """The secure arm with each member's change clipped and noised (GroupPrivacy)."""

    def __init__(
        self, model_dir: Path, settings: RunSettings, data: BenchData, noise: GroupNoise
    ) -> None:
        params = SecAggParams.v3().with_group_noise(noise)
        super().__init__(
            model_dir, settings, data, secure=True, group_size=len(data.peers), params=params
        )
        self.min_survivors = MIN_SURVIVORS
        self.privacy = {
            pid: GroupPrivacy(params, GroupBudget(DELTA), len(self.ids)) for pid in self.ids
        }
        self._pid = {id(t): pid for pid, t in self.trainers.items()}
        for pid, trainer in self.trainers.items():
            self.privacy[pid].start(member_vector(trainer, self.lora))
        self.change_norms: list[float] = []

    def _vector(self, trainer: LocalTrainer) -> np.ndarray:
        privacy = self.privacy[self._pid[id(trainer)]]
        sent, _ = privacy.prepare(super()._vector(trainer))
        assert privacy.anchor.last_change_norm is not None
        self.change_norms.append(privacy.anchor.last_change_norm)
        return sent

    def _apply(self, pid: str, out: GroupOutcome) -> None:
        super()._apply(pid, out)
        self.privacy[pid].released(out.average)


def run_arm(
    name: str,
    model_dir: Path,
    settings: RunSettings,
    data: BenchData,
    evaluator: Evaluator,
    noise: GroupNoise | None,
) -> dict[str, Any]:
    started = time.perf_counter()
    arm: FederatedArm
    if noise is None:
        arm = FederatedArm(
            model_dir,
            settings,
            data,
            secure=True,
            group_size=len(data.peers),
            params=SecAggParams.v3(),
        )
    else:
        arm = GroupDPArm(model_dir, settings, data, noise)
    _, trainers = arm.run()
    losses = [evaluator.evaluate(trainers[p].adapter_state()) for p in arm.ids]
    out: dict[str, Any] = {
        "arm": name,
        "union_loss": float(np.mean([loss.union for loss in losses])),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    if isinstance(arm, GroupDPArm):
        budget = arm.privacy[arm.ids[0]].budget
        z = budget.history[-1].noise_multiplier
        out.update(
            noise_multiplier=noise.noise_multiplier if noise else None,
            effective_noise_multiplier=z,
            epsilon_one_round=epsilon_of([Spend(z, 1.0, 1)], DELTA),
            epsilon_all_rounds=budget.epsilon(),
            rounds=budget.rounds,
            change_norm_median=float(np.median(arm.change_norms)),
        )
    return out


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{'arm':<22} {'union loss':>10} {'z_eff':>7} {'ε 1 round':>10} "
        f"{'ε all':>9} {'|change| median':>16}"
    ]
    for arm in result["arms"]:

        def cell(key: str, fmt: str, a: dict[str, Any] = arm) -> str:
            value = a.get(key)
            return format(value, fmt) if value is not None else "-"

        lines.append(
            f"{arm['arm']:<22} {arm['union_loss']:>10.4f} "
            f"{cell('effective_noise_multiplier', '>7.3f')} "
            f"{cell('epsilon_one_round', '>10.3f')} "
            f"{cell('epsilon_all_rounds', '>9.2f')} "
            f"{cell('change_norm_median', '>16.3f')}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", default="0.5,2", help="group noise multipliers, comma-separated")
    parser.add_argument("--clip", type=float, default=0.5, help="[privacy] group_update_clip")
    parser.add_argument("--colluders", type=int, default=0)
    parser.add_argument("--peers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=QUICK.rounds)
    parser.add_argument("--local-steps", type=int, default=QUICK.local_steps)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    settings = RunSettings(
        rounds=args.rounds,
        local_steps=args.local_steps,
        seed=args.seed,
        lr=QUICK.lr,
        fedprox_mu=QUICK.fedprox_mu,
    )
    workdir = Path(tempfile.mkdtemp(prefix="fsddp-"))
    started = time.perf_counter()
    try:
        data = demo_data(workdir, args.peers, args.seed)
        model_dir = build_demo_model(demo_model_cache_dir())
        evaluator = Evaluator(model_dir, settings, data)
        arms = [run_arm("secure, no group DP", model_dir, settings, data, evaluator, None)]
        for z in (float(v) for v in args.noise.split(",")):
            noise = GroupNoise(z, args.clip, MIN_SURVIVORS, args.colluders)
            arms.append(run_arm(f"group DP z={z:g}", model_dir, settings, data, evaluator, noise))
            print(table({"arms": arms}), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "benchmark": "group_dp",
        "command": " ".join(["python -m bench.group_dp", *sys.argv[1:]]),
        "settings": {
            "rounds": args.rounds,
            "local_steps": args.local_steps,
            "peers": args.peers,
            "group_update_clip": args.clip,
            "colluders": args.colluders,
            "min_survivors": MIN_SURVIVORS,
            "delta": DELTA,
            "accountant": "Opacus RDP",
        },
        "arms": arms,
        "total_wall_s": round(time.perf_counter() - started, 1),
        "machine": machine(),
    }
    print(json.dumps(result, indent=2))
    print(table(result), file=sys.stderr)


if __name__ == "__main__":
    main()
