"""``mode = "lora_avg"``: train a LoRA adapter locally, average it within the group.

The group averages one vector per member: the adapter and, with
``average_optimizer_state``, AdamW's ``exp_avg`` (``learning/moment_averaging.py``),
weighted by each member's carried mass. Secure aggregation runs unless the federation
set ``secure_aggregation = "none"``; then members exchange updates in the clear.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass

import numpy as np
from fedswarm.learning.moment_averaging import averaged_length, explain_refusal, layout_note

from ..averaging.plain import KIND as PLAIN_KIND
from ..averaging.plain import plain_group_average
from ..averaging.result import GroupAverage
from ..errors import RoundAbortedError
from ..exchange import Combined, MemberParts
from ..round import MIN_GROUP_SIZE, RoundContext


@dataclass(frozen=True)
class LoraAveragingSettings:
    """lora_avg's one setting (kept in ``[federation]``: every member must agree on it)."""

    average_optimizer_state: bool = True


class LoraAveraging:
    """Adapter averaging: the ``Exchange`` of ``mode = "lora_avg"``."""

    name = "lora_avg"
    adopts_neighbour_adapters = True

    def __init__(self, parts: MemberParts, settings: LoraAveragingSettings) -> None:
        self._parts = parts
        self._with_moments = settings.average_optimizer_state

    def train(self) -> float | None:
        return self._parts.trainer.train().loss

    async def combine(self, ctx: RoundContext, weight: float) -> Combined:
        trainer = self._parts.trainer
        with_moments = self._with_moments
        vector = await asyncio.to_thread(trainer.averaging_vector, with_moments)
        # Members that disagree on the layout send vectors of different lengths and
        # refuse each other; the refusal and the abort say what we send.
        adapter_size = vector.size // averaged_length(1, with_moments)
        outcome = await self._average(ctx, vector, weight, adapter_size)
        if len(outcome.survivors) < MIN_GROUP_SIZE:
            raise RoundAbortedError(
                f"only {len(outcome.survivors)} of {len(ctx.members)} group members took part"
            )
        return Combined(
            record={
                "survivors": outcome.survivors,
                "dropped": outcome.dropped,
                "protocol": outcome.protocol,
                "aggregator": outcome.aggregator,
                "decryptor": outcome.decryptor,
                "bytes_sent": outcome.bytes_sent,
                "bytes_received": outcome.bytes_received,
                "aggregate_s": outcome.timings.get("aggregate_s"),
            },
            carried_weight=outcome.total_weight / len(outcome.survivors),
            apply=functools.partial(
                trainer.load_averaging_vector, outcome.average, with_moments
            ),
        )

    async def _average(
        self, ctx: RoundContext, vector: np.ndarray, weight: float, adapter_size: int
    ) -> GroupAverage:
        with_moments = self._with_moments
        secure = self._parts.secure
        if secure is None:
            def refuse(peer: str, why: str) -> None:
                ctx.on_reject(peer, PLAIN_KIND, explain_refusal(why, adapter_size, with_moments))

            return await plain_group_average(ctx, vector, weight, on_reject=refuse)
        try:
            return await secure.average(ctx, vector, weight)
        except RoundAbortedError as exc:  # a failed session names our layout, the usual cause
            raise RoundAbortedError(f"{exc} ({layout_note(adapter_size, with_moments)})") from exc
