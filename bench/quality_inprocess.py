"""The benchmark's arms run in one process with the real training and averaging code.

Every arm trains with ``LocalTrainer.train(local_steps)`` once per round, for the same
number of rounds, with the same per-peer seeds (``seed + peer index``, as
``LocalFederation`` assigns them). Only what happens between rounds differs:

* local-only: nothing; each peer keeps its own adapter.
* centralised: one trainer on the pooled data; ``grad_accum = peers`` so each of its
  optimiser steps sees as many examples as one step of the whole federation.
* federated: the daemon's round logic — ``plan_groups`` for the groups, the carried
  push-sum mass of ``daemon.weighting`` for the weights, the daemon's vector (adapter and,
  by default, AdamW moments: ``LocalTrainer.averaging_vector``), then either the daemon's own
  ``plain_group_average`` (through real ``Mailbox`` objects) or the real
  ``secagg.run_secure_aggregation`` (BFV + masks + Shamir, HE in a spawn process pool)
  over in-memory transports. The vector is built and applied by lora_avg's own codec
  (``member_vector`` / ``apply_average``), levers included.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fedswarm.federation.averaging.group_momentum import GroupMomentum
from fedswarm.federation.averaging.plain import plain_group_average
from fedswarm.federation.groups.plan import epoch_of, group_id, plan_groups
from fedswarm.federation.link import FunctionLink
from fedswarm.federation.modes.lora_avg import (
    LoraAveragingSettings,
    apply_average,
    group_result,
    member_vector,
)
from fedswarm.federation.round import RoundContext
from fedswarm.learning.screening.settings import ScreenSettings
from fedswarm.learning.settings import AlignmentSettings
from fedswarm.learning.trainer import LocalTrainer
from fedswarm.secagg.errors import SecAggError
from fedswarm.secagg.he import make_executor
from fedswarm.secagg.params import SecAggParams
from fedswarm.secagg.session import GroupSpec, run_secure_aggregation
from fedswarm.secagg.signing import Ed25519Signer, verifier_from_keys

from .quality_report import ArmResult
from .quality_setup import BenchData, Evaluator, QualityBenchError, RunSettings, make_trainer
from .quality_transport import MailboxNetwork, queue_transports

FEDERATION_ID = "fedswarm-quality"
STEP_TIMEOUT_S = 300.0  # generous: a 2-core box running other tests can be very slow


@dataclass(frozen=True)
class GroupOutcome:
    """One member's view of its group's average (what ``GroupAverage`` carries)."""

    average: np.ndarray
    total_weight: float
    survivors: int
    bytes_sent: int
    error_bound: float = 0.0  # the secure average's stated per-coordinate error


def run_local_only(model_dir: Path, settings: RunSettings, data: BenchData,
                   evaluator: Evaluator) -> ArmResult:
    """Each peer trains alone for ``rounds × local_steps`` steps; no averaging."""
    losses, wall = [], 0.0
    for index, peer in enumerate(data.peers):
        started = time.perf_counter()
        trainer = make_trainer(model_dir, settings, peer.train_path, peer.eval_path,
                               seed=settings.seed + index, alignment=data.public)
        for _ in range(settings.rounds):
            trainer.train(settings.local_steps)
        wall += time.perf_counter() - started
        losses.append(evaluator.evaluate(trainer.adapter_state()))
    return ArmResult("local_only", "in-process", losses, wall,
                     note="peers train one after another in this process")


def run_centralised(model_dir: Path, settings: RunSettings, data: BenchData,
                    evaluator: Evaluator) -> ArmResult:
    """One model, pooled data, same optimiser steps, ``peers``× examples per step."""
    started = time.perf_counter()
    trainer = make_trainer(model_dir, settings, data.pooled_train, data.union_eval,
                           seed=settings.seed, grad_accum=len(data.peers),
                           alignment=data.public)
    for _ in range(settings.rounds):
        trainer.train(settings.local_steps)
    wall = time.perf_counter() - started
    return ArmResult("centralised", "in-process", [evaluator.evaluate(trainer.adapter_state())],
                     wall, note=f"grad_accum={len(data.peers)} (one step sees every peer's batch)")


class FederatedArm:
    """N in-process peers that train, group, average and apply exactly as daemons do."""

    def __init__(self, model_dir: Path, settings: RunSettings, data: BenchData, *,
                 secure: bool, group_size: int, params: SecAggParams | None = None,
                 screen: ScreenSettings | None = None,
                 alignment: AlignmentSettings | None = None) -> None:
        self.settings = settings
        self.secure = secure
        self.group_size = group_size
        self.ids = [f"peer-{i:02d}" for i in range(len(data.peers))]
        alignment = alignment if alignment is not None else data.public
        self.trainers: dict[str, LocalTrainer] = {
            pid: make_trainer(model_dir, settings, peer.train_path, peer.eval_path,
                              seed=settings.seed + index, fedprox_mu=settings.fedprox_mu,
                              freeze_lora_a=settings.freeze_lora_a, scaffold=settings.scaffold,
                              screen=screen, alignment=alignment)
            for index, (pid, peer) in enumerate(zip(self.ids, data.peers, strict=True))
        }
        self.lora = LoraAveragingSettings(settings.average_optimizer_state,
                                          freeze_lora_a=settings.freeze_lora_a,
                                          group_momentum=settings.group_momentum,
                                          scaffold=settings.scaffold)
        self.momentum = {pid: GroupMomentum(settings.group_momentum) if settings.group_momentum
                         else None for pid in self.ids}
        self.mass: dict[str, float] = {}
        self._mass_epoch = -1
        self.signers = {pid: Ed25519Signer.generate(pid) for pid in self.ids}
        self.verify = verifier_from_keys({p: s.verify_key for p, s in self.signers.items()})
        self.params = params or SecAggParams()
        self.network = MailboxNetwork(self.ids)
        self.aggregation_s = 0.0
        self.bytes_sent: list[int] = []
        self.rejections: list[str] = []
        self.pool_start_s = 0.0
        self.min_survivors = 0  # secure sessions: the smallest sum they may reveal

    def _refresh_mass(self, round: int) -> None:
        """As ``RoundRunner._refresh_mass``: reset to the sample count at each grid pass."""
        epoch = epoch_of(round, len(self.ids), self.group_size)
        if epoch != self._mass_epoch:
            self._mass_epoch = epoch
            self.mass = {p: float(t.num_train_samples) for p, t in self.trainers.items()}

    async def _plain(self, round: int, group: tuple[str, ...],
                     vectors: dict[str, np.ndarray]) -> dict[str, GroupOutcome]:
        deadline = time.monotonic() + STEP_TIMEOUT_S

        async def member(me: str) -> tuple[str, GroupOutcome]:
            ctx = RoundContext(
                me=me, round=round, members=tuple(sorted(group)),
                link=FunctionLink(self.network.sender(me)), mailbox=self.network.mailboxes[me],
                deadline=deadline,
                on_reject=lambda peer, kind, why: self.rejections.append(f"{peer}: {why}"))
            out = await plain_group_average(ctx, vectors[me], self.mass[me])
            return me, GroupOutcome(out.average, out.total_weight, len(out.survivors),
                                    out.bytes_sent)

        return dict(await asyncio.gather(*(member(m) for m in group)))

    async def _secure(self, round: int, group: tuple[str, ...], vectors: dict[str, np.ndarray],
                      pool: concurrent.futures.ProcessPoolExecutor) -> dict[str, GroupOutcome]:
        spec = GroupSpec(FEDERATION_ID, group_id(round, group), round, group,
                         min_survivors=self.min_survivors)
        transports = queue_transports(group)

        async def member(me: str) -> tuple[str, GroupOutcome]:
            out = await run_secure_aggregation(
                spec, self.signers[me], self.verify, vectors[me], self.mass[me],
                transports[me], self.params, step_timeout_s=STEP_TIMEOUT_S, executor=pool)
            return me, GroupOutcome(out.average, out.total_weight, len(out.survivors),
                                    out.bytes_sent, out.error_bound)

        return dict(await asyncio.gather(*(member(m) for m in group)))

    def _aggregate(self, round: int, groups: list[tuple[str, ...]],
                   vectors: dict[str, np.ndarray],
                   pool: concurrent.futures.ProcessPoolExecutor | None) -> dict[str, GroupOutcome]:
        async def everyone() -> dict[str, GroupOutcome]:
            jobs: list[Awaitable[dict[str, GroupOutcome]]] = []
            for group in groups:
                if self.secure:
                    assert pool is not None
                    jobs.append(self._secure(round, group, vectors, pool))
                else:
                    jobs.append(self._plain(round, group, vectors))
            merged: dict[str, GroupOutcome] = {}
            for part in await asyncio.gather(*jobs):
                merged.update(part)
            return merged

        try:
            return asyncio.run(everyone())
        except SecAggError as exc:
            raise QualityBenchError(f"round {round}: secure aggregation failed: {exc}") from exc

    def _vector(self, trainer: LocalTrainer) -> np.ndarray:
        """What ``LoraAveraging.combine`` sends (lora_avg's own codec)."""
        return member_vector(trainer, self.lora)

    def _apply(self, pid: str, out: GroupOutcome) -> None:
        """What ``LoraAveraging`` applies: marker checked (within the average's error, as
        the daemon checks it), momentum step, c loaded."""
        apply_average(self.trainers[pid], self.lora, self.momentum[pid],
                      group_result(out.average, self.lora, out.error_bound))

    def run(self) -> tuple[float, dict[str, LocalTrainer]]:
        """All rounds; returns the wall time (training + averaging) and the trainers."""
        pool_started = time.perf_counter()
        pool = _warm_pool() if self.secure else None
        self.pool_start_s = time.perf_counter() - pool_started
        started = time.perf_counter()
        try:
            for round in range(1, self.settings.rounds + 1):
                self.network.advance(round)
                for trainer in self.trainers.values():
                    trainer.train(self.settings.local_steps)
                self._refresh_mass(round)
                groups = plan_groups(self.ids, round, self.group_size)
                vectors = {p: self._vector(t) for p, t in self.trainers.items()}
                agg_started = time.perf_counter()
                outcomes = self._aggregate(round, groups, vectors, pool)
                self.aggregation_s += time.perf_counter() - agg_started
                if self.rejections:
                    raise QualityBenchError(f"round {round}: updates rejected: "
                                            f"{self.rejections[:3]}")
                for pid, out in outcomes.items():
                    if out.survivors != len(plan_group_of(pid, groups)):
                        raise QualityBenchError(f"round {round}: {pid}'s group lost members")
                    self._apply(pid, out)
                    self.mass[pid] = out.total_weight / out.survivors
                    self.bytes_sent.append(out.bytes_sent)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        return time.perf_counter() - started, self.trainers


def _warm_pool() -> concurrent.futures.ProcessPoolExecutor:
    """Start the HE worker before the clock starts, as a daemon does once at start-up.

    A spawn worker re-imports the main module (torch included): seconds, paid once per
    process lifetime, not per round, so it is reported apart (``pool_start_s``).
    """
    pool = make_executor(1)
    pool.submit(os.getpid).result()
    return pool


def plan_group_of(peer: str, groups: list[tuple[str, ...]]) -> tuple[str, ...]:
    for group in groups:
        if peer in group:
            return group
    raise QualityBenchError(f"{peer} is in no group")


def run_federated(name: str, model_dir: Path, settings: RunSettings, data: BenchData,
                  evaluator: Evaluator, *, secure: bool, group_size: int,
                  params: SecAggParams | None = None) -> ArmResult:
    """One federated arm in process; ``aggregation_s`` is the time spent averaging."""
    arm = FederatedArm(model_dir, settings, data, secure=secure, group_size=group_size,
                       params=params)
    wall, trainers = arm.run()
    extra: dict[str, float] = {"pool_start_s": round(arm.pool_start_s, 2)} if secure else {}
    losses = [evaluator.evaluate(trainers[p].adapter_state()) for p in arm.ids]
    return ArmResult(
        name, "in-process", losses, wall, aggregation_s=arm.aggregation_s,
        bytes_per_peer_round=sum(arm.bytes_sent) / max(len(arm.bytes_sent), 1),
        group_size=group_size, protocol=arm.params.protocol if secure else "none",
        note="peers train one after another in this process",
        extra={"rounds": settings.rounds,
               "bytes_per_peer_run": sum(arm.bytes_sent) / len(arm.ids), **extra},
    )
