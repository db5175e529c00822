"""``mode = "lora_avg"``: train a LoRA adapter locally, average it within the group.

The group averages one vector per member: the adapter and, with
``average_optimizer_state``, AdamW's ``exp_avg`` (``learning/moment_averaging.py``),
weighted by each member's carried mass. Secure aggregation runs unless the federation
set ``secure_aggregation = "none"``; then members exchange updates in the clear.

Three levers for rounds far apart (many local steps, issue #28; docs/learning.md):
``freeze_lora_a`` (FFA-LoRA: A shared and frozen, only B trained and averaged),
``group_momentum`` (FedAvgM on each member, ``averaging/group_momentum.py``) and
``scaffold`` (control variates, ``learning/control_variates.py``; ``c_i`` travels in the
vector). With any on, the vector ends with a settings marker (``averaging/agreement.py``)
so a member with other settings makes the round abort instead of being averaged in.

The vector: ``[adapter | exp_avg / g (average_optimizer_state) | c_i / g (scaffold) |
marker]``. ``member_vector`` / ``apply_average`` are the one codec; the quality benchmark
calls them too.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass

import numpy as np
from fedswarm.learning.moment_averaging import averaged_length, explain_refusal, layout_note
from fedswarm.learning.trainer import LocalTrainer

from ..averaging.agreement import MARKER_SIZE, strip_marker, with_marker
from ..averaging.group_dp import GroupBudgetSpentError
from ..averaging.group_momentum import GroupMomentum
from ..averaging.plain import KIND as PLAIN_KIND
from ..averaging.plain import plain_group_average
from ..averaging.result import GroupAverage
from ..errors import RoundAbortedError, SettingsMismatchError
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
    scaffold: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.group_momentum < 1.0:
            raise ValueError("group_momentum: must be in [0, 1) (0 = plain averaging)")

    @property
    def needs_marker(self) -> bool:
        """Whether the vector carries the settings marker: only with a lever on, so
        default members still average with members of earlier versions."""
        return self.freeze_lora_a or self.group_momentum > 0.0 or self.scaffold

    def describe(self) -> str:
        """The settings every member must share, as the marker is drawn from them."""
        return (f"average_optimizer_state={self.average_optimizer_state} "
                f"freeze_lora_a={self.freeze_lora_a} group_momentum={self.group_momentum:g} "
                f"scaffold={self.scaffold}")

    @property
    def parts_per_adapter(self) -> int:
        """How many adapter-sized parts the vector holds (before the marker)."""
        return averaged_length(1, self.average_optimizer_state) + int(self.scaffold)


def member_vector(trainer: LocalTrainer, settings: LoraAveragingSettings) -> np.ndarray:
    """What this member sends to its group's average (layout in the module docstring)."""
    vector = trainer.averaging_vector(settings.average_optimizer_state)
    if settings.scaffold:
        vector = np.concatenate([vector, trainer.control_vector()]).astype(np.float32)
    if settings.needs_marker:
        vector = with_marker(vector, settings.describe())
    return vector


def group_result(average: np.ndarray, settings: LoraAveragingSettings,
                 error_bound: float = 0.0) -> np.ndarray:
    """The group's average without the marker; ``SettingsMismatchError`` if the group
    disagreed on the settings (beyond the average's ``error_bound``)."""
    if not settings.needs_marker:
        return average
    return strip_marker(average, settings.describe(), error_bound)


def apply_average(trainer: LocalTrainer, settings: LoraAveragingSettings,
                  momentum: GroupMomentum | None, average: np.ndarray) -> None:
    """Load a ``group_result``: the adapter (a momentum step from where this round's
    training started, with group momentum), AdamW's exp_avg, SCAFFOLD's ``c``."""
    size = trainer.adapter_size
    average = np.array(average, dtype=np.float32, copy=True)
    control = None
    if settings.scaffold:
        average, control = average[:-size], average[-size:]
    if momentum is not None:
        average[:size] = momentum.step(trainer.anchor_vector(), average[:size])
    trainer.load_averaging_vector(average, settings.average_optimizer_state)
    if control is not None:
        trainer.load_control_average(control)


class LoraAveraging:
    """Adapter averaging: the ``Exchange`` of ``mode = "lora_avg"``."""

    name = "lora_avg"
    adopts_neighbour_adapters = True

    def __init__(self, parts: MemberParts, settings: LoraAveragingSettings) -> None:
        if parts.trainer.freeze_lora_a != settings.freeze_lora_a:
            raise SettingsConflictError(
                f"[federation] freeze_lora_a = {settings.freeze_lora_a} but the trainer was "
                f"built with freeze_lora_a = {parts.trainer.freeze_lora_a}")
        if (parts.trainer.control is not None) != settings.scaffold:
            raise SettingsConflictError(
                f"[federation] scaffold = {settings.scaffold} but the trainer was built "
                f"{'with' if parts.trainer.control is not None else 'without'} it")
        self._parts = parts
        self._settings = settings
        self._with_moments = settings.average_optimizer_state
        self._momentum = (GroupMomentum(settings.group_momentum)
                          if settings.group_momentum > 0.0 else None)

    def train(self) -> float | None:
        group_dp = self._parts.group_dp
        if group_dp is not None:  # the first round's start is the first anchor
            group_dp.start(member_vector(self._parts.trainer, self._settings))
        return self._parts.trainer.train().loss

    async def combine(self, ctx: RoundContext, weight: float) -> Combined:
        trainer = self._parts.trainer
        vector = await asyncio.to_thread(member_vector, trainer, self._settings)
        group_dp = self._parts.group_dp
        if group_dp is not None:  # the change since the last release, clipped (group_dp.py)
            try:
                vector, _ = group_dp.prepare(vector)
            except GroupBudgetSpentError as exc:
                raise RoundAbortedError(str(exc)) from exc
        # Members that disagree on the layout send vectors of different lengths and
        # refuse each other; the refusal and the abort say what we send.
        adapter_size = trainer.adapter_size
        outcome = await self._average(ctx, vector, weight, adapter_size)
        if len(outcome.survivors) < MIN_GROUP_SIZE:
            raise RoundAbortedError(
                f"only {len(outcome.survivors)} of {len(ctx.members)} group members took part"
            )
        if group_dp is not None:  # released to the group: the next change's anchor
            group_dp.released(outcome.average)
        average = group_result(outcome.average, self._settings, outcome.error_bound)
        return Combined(
            record=outcome.round_record(),
            carried_weight=outcome.carried_weight(),
            apply=functools.partial(apply_average, trainer, self._settings, self._momentum,
                                    average),
            # the validation gate's way back for what the trainer does not hold
            undo=(None if self._momentum is None
                  else functools.partial(self._momentum.restore, self._momentum.velocity())),
        )

    async def _average(
        self, ctx: RoundContext, vector: np.ndarray, weight: float, adapter_size: int
    ) -> GroupAverage:
        with_moments = self._with_moments
        secure = self._parts.secure
        # Beyond adapter (+ exp_avg): SCAFFOLD's c_i and the marker, for the layout note.
        extra = (adapter_size * int(self._settings.scaffold)
                 + (MARKER_SIZE if self._settings.needs_marker else 0))
        if secure is None:
            if self._parts.group_dp is not None:  # the config check refuses this
                raise RoundAbortedError("group-level DP needs secure aggregation")

            def refuse(peer: str, why: str) -> None:
                ctx.on_reject(peer, PLAIN_KIND,
                              explain_refusal(why, adapter_size, with_moments, extra))

            return await plain_group_average(ctx, vector, weight, on_reject=refuse)
        group_dp = self._parts.group_dp
        try:
            return await secure.average(
                ctx, vector, weight, None if group_dp is None else group_dp.params
            )
        except SettingsMismatchError as exc:
            # a member sent keys for another length: name our layout, the usual cause (a
            # member merely late or gone gets no such hint: it would send operators looking
            # for a setting that is fine)
            raise SettingsMismatchError(
                f"{exc} ({layout_note(adapter_size, with_moments, extra)})") from exc
