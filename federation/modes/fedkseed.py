"""``mode = "fedkseed"``: zeroth-order full-model tuning along K shared seeds.

A member trains with ``learning.fedkseed.KSeedTrainer`` (two forward passes a step, no
backward, no optimiser state) and its whole model is K accumulated scalars. The group
averages those K-vectors (and FedKSeed-Pro's per-seed amplitudes) through the same
plain or secure averaging as ``lora_avg``; since the model is linear in the scalars,
averaging them is averaging the models, and the push-sum weights carry over unchanged.
Every member of the group receives the same average and replays it from the base
weights in one fixed order, so the group ends the round bit-identical.

The vector: ``[scalars / scalar_bound | amplitudes / grad_clip]`` (amplitudes with
``pro``), every value in [-1, 1] (``KSeedTrainer.exchange_vector``). A member with
another ``k`` or ``pro`` sends another length and is refused by the averaging.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from fedswarm.learning.fedkseed import KSeedSettings
from fedswarm.learning.fedkseed.trainer import KSeedTrainer

from ..averaging.plain import plain_group_average
from ..averaging.result import GroupAverage
from ..errors import RoundAbortedError
from ..exchange import Combined, MemberParts
from ..round import MIN_GROUP_SIZE, RoundContext

EVENT = "fedkseed"


class KSeedSettingsConflictError(ValueError):
    """The trainer is not a FedKSeed trainer built with the mode's settings."""


class KSeedAveraging:
    """K-vector averaging: the ``Exchange`` of ``mode = "fedkseed"``."""

    name = "fedkseed"
    adopts_neighbour_adapters = True  # every member holds a K-vector of the same pool

    def __init__(self, parts: MemberParts, settings: KSeedSettings) -> None:
        trainer = parts.trainer
        if not isinstance(trainer, KSeedTrainer):
            raise KSeedSettingsConflictError(
                'mode = "fedkseed" needs a KSeedTrainer (the daemon builds one for it)'
            )
        if trainer.settings != settings:
            raise KSeedSettingsConflictError(
                "[fedkseed] settings differ from the ones the trainer was built with"
            )
        self._parts = parts
        self._trainer = trainer
        self._settings = settings

    def train(self) -> float | None:
        return self._trainer.train().loss

    async def combine(self, ctx: RoundContext, weight: float) -> Combined:
        trainer = self._trainer
        vector, clipped = await asyncio.to_thread(trainer.exchange_vector)
        outcome = await self._average(ctx, vector, weight)
        if len(outcome.survivors) < MIN_GROUP_SIZE:
            raise RoundAbortedError(
                f"only {len(outcome.survivors)} of {len(ctx.members)} group members took part"
            )
        average = group_k_vector(outcome, self._settings.vector_size)
        event: dict[str, Any] = {
            "round": ctx.round,
            "member": ctx.me,
            "protocol": outcome.protocol,
            "group": len(outcome.survivors),
            "bytes_sent": outcome.bytes_sent,
            "bytes_received": outcome.bytes_received,
            "k": self._settings.k,
            "seeds_used": int(np.count_nonzero(average[: self._settings.k])),
            "clipped": clipped,
        }

        def apply() -> None:
            report = trainer.load_group_average(average)
            # filled in before the runner records the event (after apply)
            event["replay_s"] = round(report.seconds, 3)
            event["parameters_fingerprint"] = trainer.parameters_fingerprint()

        return Combined(
            record=outcome.round_record(),
            carried_weight=outcome.carried_weight(),
            apply=apply,
            event=(EVENT, event),
        )

    async def _average(self, ctx: RoundContext, vector: np.ndarray, weight: float) -> GroupAverage:
        secure = self._parts.secure
        if secure is None:
            return await plain_group_average(ctx, vector, weight)
        return await secure.average(ctx, vector, weight)


def group_k_vector(outcome: GroupAverage, size: int) -> np.ndarray:
    """The group's average as the K-vector every member replays; ``RoundAbortedError``
    when it is not one (wrong length, NaN, outside [-1, 1] beyond the protocol's error).

    Secure aggregation's quantisation may put a value a hair outside [-1, 1]; it is
    clipped back, the same on every member (they all hold the same average).
    """
    average = np.asarray(outcome.average, dtype=np.float32)
    if average.shape != (size,):
        raise RoundAbortedError(f"group K-vector has {average.size} values, expected {size}")
    if not np.isfinite(average).all():
        raise RoundAbortedError("group K-vector refused: it contains NaN or infinity")
    limit = 1.0 + outcome.error_bound + 1e-5
    largest = float(np.max(np.abs(average))) if size else 0.0
    if largest > limit:
        raise RoundAbortedError(f"group K-vector refused: |value| {largest:.6g} above {limit:.6g}")
    return np.clip(average, -1.0, 1.0).astype(np.float32)
