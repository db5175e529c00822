"""The dashboard's FedMKT panel: who taught whom, public-set losses, and the loss at home.

The round log (SQLite) is the durable record of a FedMKT round: its ``survivors`` are
this daemon plus the members whose knowledge it distilled from, and its ``note`` carries
the share of aligned positions. The public-set losses of the models exist only in the
live ``fedmkt`` event (the round log has no column for them), so ``FedMKTEventLog``
keeps the last few of those events in memory. After a restart, older rounds still show
their edges from the log, with losses ``None``.

Beside the public-set losses the panel shows this member's *own-domain* loss (its eval
set) after local training and after distillation, both from the round log: FedMKT's
promise is that nobody gets worse at home, and a distillation that undoes local
training shows up here as a rise (``own_loss_change`` > 0) before it shows anywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from ..state import RoundRecord

log = logging.getLogger(__name__)

PROTOCOL = "fedmkt"
#: How many rounds of ``fedmkt`` events are kept in memory (one small dict each).
EVENT_ROUNDS_KEPT = 500
_ALIGNED = re.compile(r"\((\d+(?:\.\d+)?)% positions aligned\)")
_EXCHANGE = re.compile(r"^fedmkt (secure|clear) exchange:")


class FedMKTEventLog:
    """The most recent ``fedmkt`` events by round, filled by a task that drains a subscription.

    A task (not a read-on-demand queue) because the event bus drops a slow subscriber's
    oldest events: with no browser open, per-step events would push FedMKT ones out.
    """

    def __init__(self, keep: int = EVENT_ROUNDS_KEPT) -> None:
        self._keep = keep
        self._by_round: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._task: asyncio.Task[None] | None = None

    def record(self, event: dict[str, Any]) -> None:
        """Keep ``event`` if it is a well-formed ``fedmkt`` event; anything else is ignored."""
        if event.get("type") != PROTOCOL or not isinstance(event.get("round"), int):
            return
        self._by_round[event["round"]] = event
        self._by_round.move_to_end(event["round"])
        while len(self._by_round) > self._keep:
            self._by_round.popitem(last=False)

    def get(self, round: int) -> dict[str, Any] | None:
        return self._by_round.get(round)

    def rounds(self) -> list[int]:
        return list(self._by_round)

    def follow(
        self,
        subscribe: Callable[[], asyncio.Queue[dict[str, Any]]],
        unsubscribe: Callable[[asyncio.Queue[dict[str, Any]]], None],
    ) -> None:
        """Start recording from the event bus (needs a running loop; a no-op without one)."""
        if self._task is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.debug("no running loop: FedMKT events will not be recorded")
            return
        queue = subscribe()

        async def drain() -> None:
            try:
                while True:
                    self.record(await queue.get())
            finally:
                unsubscribe(queue)

        self._task = loop.create_task(drain(), name="fedmkt-event-log")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def aligned_fraction_from_note(note: str | None) -> float | None:
    """The ``(NN% positions aligned)`` share that ``fedmkt_record`` writes into the note."""
    match = _ALIGNED.search(note or "")
    return float(match.group(1)) / 100 if match else None


def exchange_from_note(note: str | None) -> str | None:
    """``secure`` or ``clear``: the exchange ``fedmkt_record`` names at the start of the note."""
    match = _EXCHANGE.match(note or "")
    return match.group(1) if match else None


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if number == number and abs(number) != float("inf") else None


def own_loss_change(before: float | None, after: float | None) -> float | None:
    """Relative change of the own-domain loss across distillation; > 0 is a regression."""
    if before is None or after is None or before <= 0.0:
        return None
    return after / before - 1.0


def fedmkt_round(
    record: RoundRecord | None,
    event: dict[str, Any] | None,
    me: str,
    org_of: Callable[[str], str | None],
) -> dict[str, Any]:
    """One panel row from the round-log row and/or the live event of the same round."""
    round = record.round if record is not None else int(event["round"])  # type: ignore[index]
    if event is not None and isinstance(event.get("teachers"), list):
        teachers = [str(t) for t in event["teachers"]]
    else:
        teachers = sorted(set(record.survivors or []) - {me}) if record is not None else []
    distill = event.get("distill") if event is not None else None
    aligned = _finite(distill.get("peer_position_fraction")) if isinstance(distill, dict) else None
    if aligned is None and record is not None:
        aligned = aligned_fraction_from_note(record.note)
    losses = event.get("public_losses") if event is not None else None
    public_losses = [
        {"peer_id": str(peer), "org": org_of(str(peer)), "loss": _finite(loss)}
        for peer, loss in (losses.items() if isinstance(losses, dict) else [])
    ]
    public_losses.sort(key=lambda entry: (entry["peer_id"] != me, entry["peer_id"]))
    own_before = _finite(record.eval_loss_before) if record is not None else None
    own_after = _finite(record.eval_loss_after) if record is not None else None
    exchange = event.get("exchange") if event is not None else None
    if exchange not in ("secure", "clear"):
        exchange = exchange_from_note(record.note if record is not None else None)
    return {
        "round": round,
        "status": record.status if record is not None else "complete",
        "student": me,
        "student_org": org_of(me),
        "exchange": exchange,
        "edges": [
            {"teacher": t, "teacher_org": org_of(t), "student": me, "student_org": org_of(me)}
            for t in teachers
        ],
        "aligned_fraction": aligned,
        "public_losses": public_losses,
        "own_loss_before": own_before,
        "own_loss_after": own_after,
        "own_loss_change": own_loss_change(own_before, own_after),
        "dropped": list(record.dropped or []) if record is not None else [],
        "distill": distill if isinstance(distill, dict) else None,
        "note": record.note if record is not None else None,
    }


def fedmkt_panel(
    *,
    enabled: bool,
    me: str,
    records: Iterable[RoundRecord],
    events: FedMKTEventLog,
    org_of: Callable[[str], str | None],
) -> dict[str, Any]:
    """``GET /api/fedmkt``: every FedMKT round this daemon knows of, oldest first."""
    records = list(records)
    by_round = {r.round: r for r in records if r.protocol == PROTOCOL and r.round > 0}
    numbers = sorted(set(by_round) | {n for n in events.rounds() if n > 0})
    start = next((r for r in records if r.round == 0), None)
    rounds = [fedmkt_round(by_round.get(n), events.get(n), me, org_of) for n in numbers]
    latest = next((r["own_loss_after"] for r in reversed(rounds)
                   if r["own_loss_after"] is not None), None)
    return {
        "enabled": enabled,
        "peer_id": me,
        "org": org_of(me),
        # own-domain eval loss before any training (round 0) and after the latest round
        "own_loss_start": _finite(start.eval_loss_after) if start is not None else None,
        "own_loss_latest": latest,
        "rounds": rounds,
    }
