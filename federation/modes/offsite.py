"""``mode = "offsite"``: members tune the owner's adapter layers on its emulator.

Two exchanges, one per role in the roster:

* ``OffsiteMember`` (every data owner): trains the adapter layers on the emulator,
  averages their change since the package with the rest of its group under the same
  secure or plain averaging as ``lora_avg`` (``federation/offsite/codec.py``), and, when
  the model owner is in its group, hands it the result;
* ``OffsiteOwner`` (``role = "model_owner"``): trains nothing and adds nothing to any
  sum (weight 0, not counted towards ``MIN_GROUP_SIZE``); it accepts the average a
  quorum of its group confirms (``owner_quorum.py``), plugs it into its full model and
  exports that. Its last plugged-in average is kept on disk, so a restart loses nothing;
  and since averages are cumulative, the next one it hears supersedes any it missed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..averaging.plain import plain_group_average
from ..averaging.result import GroupAverage
from ..averaging.secure import SecureAggregation
from ..errors import RoundAbortedError
from ..exchange import Combined
from ..link import OFFSITE_AVERAGE_KIND, send_before
from ..offsite.codec import (
    OffsiteVectorError,
    apply_delta,
    decode_average,
    encode_average,
    member_delta,
)
from ..offsite.owner_quorum import NoQuorumError, agreed_average
from ..round import MIN_GROUP_SIZE, RoundContext

if TYPE_CHECKING:
    from fedswarm.learning.offsite import OffsiteTrainer, OwnerModel

    from ..exchange import MemberParts

OWNER_STATE_FILE = "offsite_owner_state.npz"


@dataclass(frozen=True)
class OffsiteRole:
    """What ``make_exchange("offsite", ...)`` needs beyond ``MemberParts``: who the
    roster names model owner, whether that is us, and (owner) where to export.
    ``parts.trainer`` is then an ``OffsiteTrainer`` (member) or an ``OwnerTrainer``."""

    owner: str
    is_owner: bool
    export_dir: Path | None = None


def make_offsite_exchange(parts: MemberParts, role: OffsiteRole) -> OffsiteMember | OffsiteOwner:
    trainer: Any = parts.trainer
    if role.is_owner:
        return OffsiteOwner(trainer.owner, parts.work_dir, role.export_dir)
    return OffsiteMember(trainer, role.owner, parts.secure)


class OwnerStateError(ValueError):
    """The owner's saved average is unreadable or does not fit its package."""


def averaging_members(ctx: RoundContext, owner: str) -> tuple[str, ...]:
    """The group without the model owner: who sums, and who counts towards the minimum."""
    members = tuple(m for m in ctx.members if m != owner)
    if len(members) < MIN_GROUP_SIZE:
        raise RoundAbortedError(
            f"only {len(members)} data members in a group of {len(ctx.members)}; the model "
            f"owner does not count towards the minimum of {MIN_GROUP_SIZE}"
        )
    return members


class OffsiteMember:
    """A data member's ``Exchange`` for ``mode = "offsite"``."""

    name = "offsite"
    # A member that fell behind adopts the adapter layers a quorum of up members hold
    # (federation/catch_up.py, checked against their fingerprint), as in lora_avg.
    adopts_neighbour_adapters = True

    def __init__(
        self, trainer: OffsiteTrainer, owner: str, secure: SecureAggregation | None
    ) -> None:
        self._trainer = trainer
        self._owner = owner
        self._secure = secure

    def train(self) -> float | None:
        return self._trainer.train().loss

    async def combine(self, ctx: RoundContext, weight: float) -> Combined:
        members = averaging_members(ctx, self._owner)
        sub = dataclasses.replace(ctx, members=members)
        trainer = self._trainer
        delta = await asyncio.to_thread(
            lambda: member_delta(trainer.adapter_vector(), trainer.initial_vector)
        )
        outcome = await self._average(sub, delta, weight)
        if len(outcome.survivors) < MIN_GROUP_SIZE:
            raise RoundAbortedError(
                f"only {len(outcome.survivors)} of {len(members)} data members took part"
            )
        to_owner = 0
        if self._owner in ctx.members:
            to_owner = await send_before(
                ctx.link,
                self._owner,
                OFFSITE_AVERAGE_KIND,
                ctx.round,
                encode_average(outcome.average),
                ctx.deadline,
            )
        adapter = apply_delta(trainer.initial_vector, outcome.average)
        return Combined(
            record={**outcome.round_record(), "bytes_sent": outcome.bytes_sent + to_owner},
            carried_weight=outcome.carried_weight(),
            apply=lambda: trainer.load_adapter_vector(adapter),
        )

    async def _average(self, ctx: RoundContext, vector: np.ndarray, weight: float) -> GroupAverage:
        if self._secure is None:
            return await plain_group_average(ctx, vector, weight)
        return await self._secure.average(ctx, vector, weight)


class OffsiteOwner:
    """The model owner's ``Exchange``: accept a confirmed average, plug it in, export."""

    name = "offsite"
    # An owner that restarts after the members moved on adopts the adapter layers a
    # quorum of them hold (= the package's plus their latest average): nothing is lost
    # even when the federation finished while the owner was down.
    adopts_neighbour_adapters = True

    def __init__(self, model: OwnerModel, work_dir: Path, export_dir: Path | None = None) -> None:
        self._model = model
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        self._state = Path(work_dir) / OWNER_STATE_FILE
        self._export_dir = export_dir
        self.round = 0
        """The round whose average is plugged in (0: the package's own layers)."""
        self._restore()

    def _restore(self) -> None:
        """After a restart: plug the last accepted average back in (nothing is lost)."""
        if not self._state.exists():
            return
        try:
            with np.load(self._state) as saved:
                round, average = int(saved["round"]), saved["average"].astype(np.float32)
            adapter = apply_delta(self._model.initial_vector, average)
        except (OSError, ValueError, KeyError) as exc:
            raise OwnerStateError(
                f"{self._state}: cannot restore the last plugged-in average "
                f"({exc}); move it away to start from the package"
            ) from None
        self._model.plug_in_vector(adapter)
        self.round = round

    def train(self) -> float | None:
        return None  # the owner holds no data for this federation

    async def combine(self, ctx: RoundContext, weight: float) -> Combined:
        senders = averaging_members(ctx, ctx.me)
        size = self._model.initial_vector.size
        copies: dict[str, bytes] = {}
        deadline = ctx.deadline
        async for letter in ctx.mailbox.collect(
            OFFSITE_AVERAGE_KIND, ctx.round, senders, deadline, ctx.rejecter(OFFSITE_AVERAGE_KIND)
        ):
            copies[letter.sender] = letter.payload
            if len(copies) == len(senders):
                break
        try:
            agreed = agreed_average(copies)
            average = decode_average(agreed.payload, size)
            adapter = apply_delta(self._model.initial_vector, average)
        except (NoQuorumError, OffsiteVectorError) as exc:
            raise RoundAbortedError(f"model owner: {exc}") from exc

        def plug_in() -> None:
            self._model.plug_in_vector(adapter)
            self._save(ctx.round, average)
            if self._export_dir is not None:
                self._model.export(self._export_dir)

        return Combined(
            record={
                "survivors": list(agreed.confirmed_by),
                "dropped": [],
                "protocol": "offsite-owner",
                "bytes_sent": 0,
                "bytes_received": sum(len(p) for p in copies.values()),
            },
            carried_weight=None,
            apply=plug_in,
            event=(
                "offsite_plugged_in",
                {
                    "round": ctx.round,
                    "confirmed_by": len(agreed.confirmed_by),
                    "heard_from": agreed.heard_from,
                    "at": time.time(),
                },
            ),
        )

    def _save(self, round: int, average: np.ndarray) -> None:
        tmp = self._state.with_name(f".{self._state.name}.tmp-{os.getpid()}")
        with tmp.open("wb") as f:
            np.savez(f, round=np.int64(round), average=average.astype(np.float32))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._state)
        self.round = round
