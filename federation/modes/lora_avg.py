"""``mode = "lora_avg"``: train a LoRA adapter locally, average it within the group.

The group averages one vector per member: the adapter and, with
``average_optimizer_state``, AdamW's ``exp_avg`` (``learning/moment_averaging.py``),
weighted by each member's carried mass. Secure aggregation runs unless the federation
set ``secure_aggregation = "none"``; then members exchange updates in the clear.

Two levers for rounds far apart (many local steps, issue #28; docs/learning.md):
``freeze_lora_a`` (FFA-LoRA: A shared and frozen, only B trained and averaged) and
``group_momentum`` (FedAvgM on each member, ``averaging/group_momentum.py``). With either
on, the vector ends with a settings marker (``averaging/agreement.py``) so a member with
other settings makes the round abort instead of being averaged in.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass

import numpy as np
from fedswarm.learning.moment_averaging import averaged_length, explain_refusal, layout_note

from ..averaging.agreement import MARKER_SIZE, strip_marker, with_marker
from ..averaging.group_momentum import GroupMomentum
from ..averaging.plain import KIND as PLAIN_KIND
from ..averaging.plain import plain_group_average
from ..averaging.result import GroupAverage
from ..errors import RoundAbortedError
from ..exchange import Combined, MemberParts
from ..round import MIN_GROUP_SIZE, RoundContext


class SettingsConflictError(ValueError):
    """The trainer was built with other settings than the mode was given."""


@dataclass(frozen=True)
class LoraAveragingSettings:
    """lora_avg's settings (kept in ``[federation]``: every member must agree on them).

    ``freeze_lora_a`` must match the trainer's (``LocalTrainer(freeze_lora_a=...)``):
    it decides which weights train, so the trainer is built with it.
    """

    average_optimizer_state: bool = True
    freeze_lora_a: bool = False
    group_momentum: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.group_momentum < 1.0:
            raise ValueError("group_momentum: must be in [0, 1) (0 = plain averaging)")

    @property
    def needs_marker(self) -> bool:
        """Whether the vector carries the settings marker: only with a lever on, so
        default members still average with members of earlier versions."""
        return self.freeze_lora_a or self.group_momentum > 0.0

    def describe(self) -> str:
        """The settings every member must share, as the marker is drawn from them."""
        return (f"average_optimizer_state={self.average_optimizer_state} "
                f"freeze_lora_a={self.freeze_lora_a} group_momentum={self.group_momentum:g}")


class LoraAveraging:
    """Adapter averaging: the ``Exchange`` of ``mode = "lora_avg"``."""

    name = "lora_avg"
    adopts_neighbour_adapters = True

    def __init__(self, parts: MemberParts, settings: LoraAveragingSettings) -> None:
        if parts.trainer.freeze_lora_a != settings.freeze_lora_a:
            raise SettingsConflictError(
                f"[federation] freeze_lora_a = {settings.freeze_lora_a} but the trainer was "
                f"built with freeze_lora_a = {parts.trainer.freeze_lora_a}")
        self._parts = parts
        self._settings = settings
        self._with_moments = settings.average_optimizer_state
        self._momentum = (GroupMomentum(settings.group_momentum)
                          if settings.group_momentum > 0.0 else None)

    def train(self) -> float | None:
        return self._parts.trainer.train().loss

    async def combine(self, ctx: RoundContext, weight: float) -> Combined:
        trainer = self._parts.trainer
        with_moments = self._with_moments
        vector = await asyncio.to_thread(trainer.averaging_vector, with_moments)
        # Members that disagree on the layout send vectors of different lengths and
        # refuse each other; the refusal and the abort say what we send.
        adapter_size = vector.size // averaged_length(1, with_moments)
        if self._settings.needs_marker:
            vector = with_marker(vector, self._settings.describe())
        outcome = await self._average(ctx, vector, weight, adapter_size)
        if len(outcome.survivors) < MIN_GROUP_SIZE:
            raise RoundAbortedError(
                f"only {len(outcome.survivors)} of {len(ctx.members)} group members took part"
            )
        average = outcome.average
        if self._settings.needs_marker:
            average = strip_marker(average, self._settings.describe())
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
            apply=functools.partial(self._apply, average, adapter_size),
        )

    def _apply(self, average: np.ndarray, adapter_size: int) -> None:
        """Load the group's result; with group momentum, the adapter takes a momentum
        step from where this round's training started instead of the plain average."""
        trainer = self._parts.trainer
        if self._momentum is not None:
            average = np.array(average, dtype=np.float32, copy=True)
            average[:adapter_size] = self._momentum.step(trainer.anchor_vector(),
                                                         average[:adapter_size])
        trainer.load_averaging_vector(average, self._with_moments)

    async def _average(
        self, ctx: RoundContext, vector: np.ndarray, weight: float, adapter_size: int
    ) -> GroupAverage:
        with_moments = self._with_moments
        secure = self._parts.secure
        extra = MARKER_SIZE if self._settings.needs_marker else 0
        if secure is None:
            def refuse(peer: str, why: str) -> None:
                ctx.on_reject(peer, PLAIN_KIND,
                              explain_refusal(why, adapter_size, with_moments, extra))

            return await plain_group_average(ctx, vector, weight, on_reject=refuse)
        try:
            return await secure.average(ctx, vector, weight)
        except RoundAbortedError as exc:  # a failed session names our layout, the usual cause
            raise RoundAbortedError(
                f"{exc} ({layout_note(adapter_size, with_moments, extra)})") from exc
