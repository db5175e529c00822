"""The pluggable part of a round: what a member trains locally and what its group combines.

Every federation mode (``[federation] mode`` in the config) is one ``Exchange``:

* ``train()`` runs the member's local training for this round (blocking: the round
  runner calls it in a worker thread) and returns the training loss, if it has one;
* ``combine(ctx, weight)`` runs the group protocol once the group is formed and returns
  a ``Combined``: the round-log fields, the weight the member carries out of the group,
  the change to apply to the local model, and an optional dashboard event.

The round runner (``daemon/round_runner.py``) knows nothing of any mode: it trains,
forms the group, calls ``combine``, applies, evaluates and records. A new algorithm is
one module in ``modes/`` implementing this protocol, one entry in ``modes.MODES`` and,
if it has settings, one config table (docs/architecture.md, "Adding a federation mode").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fedswarm.learning.trainer import LocalTrainer

from .averaging.group_dp import GroupPrivacy
from .averaging.secure import SecureAggregation
from .round import RoundContext


@dataclass
class Combined:
    """What a group's combination produced, for the round runner to apply and record."""

    record: dict[str, Any]
    """Round-log fields (``StateStore.update_round`` columns: survivors, dropped, ...)."""
    carried_weight: float | None = None
    """The averaging weight the member carries out of the group (push-sum mass); None
    leaves it as it was."""
    apply: Callable[[], None] | None = None
    """Blocking change to the local model (run in a worker thread before evaluation);
    None when ``combine`` already changed the model (FedMKT distils in place)."""
    event: tuple[str, dict[str, Any]] | None = None
    """A dashboard event (name, fields), published and kept in the store."""
    undo: Callable[[], None] | None = None
    """Reverts what ``apply`` changed outside the trainer (the trainer has its own
    rollback point); the runner calls it after ``apply`` when the validation gate refuses
    the result. None: ``apply`` changed nothing else."""


class Exchange(Protocol):
    """One federation mode. See the module docstring."""

    name: str
    """The ``[federation] mode`` value that selects it."""
    adopts_neighbour_adapters: bool
    """Whether a member that fell behind may load a neighbour's adapter (catch-up):
    only when every member trains the same adapter shape."""

    def train(self) -> float | None:
        """This round's local training (blocking); returns the training loss."""
        ...

    async def combine(self, ctx: RoundContext, weight: float) -> Combined:
        """Combine with the group; raises ``RoundAbortedError`` when it cannot."""
        ...


@dataclass(frozen=True)
class MemberParts:
    """What every mode may use: the local trainer, secure aggregation, a work folder."""

    trainer: LocalTrainer
    secure: SecureAggregation | None  # None when ``secure_aggregation = "none"``
    work_dir: Path  # for caches that survive restarts (the daemon's state folder)
    seed: int
    # [privacy] group_noise_multiplier: the clipped change and its noise (lora_avg only)
    group_dp: GroupPrivacy | None = None
