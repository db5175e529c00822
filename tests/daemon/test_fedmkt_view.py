"""The FedMKT panel data: edges from the round log, public-set losses from live events."""

from __future__ import annotations

import asyncio
import math
import time
from types import SimpleNamespace
from typing import Any

from fedswarm.daemon.events import EventBus
from fedswarm.daemon.state import RoundRecord
from fedswarm.daemon.views.fedmkt import (
    FedMKTEventLog,
    aligned_fraction_from_note,
    fedmkt_panel,
)
from fedswarm.daemon.views.status import DaemonStatusView

ME, PEER_B, PEER_C = "12D3KooWme", "12D3KooWbb", "12D3KooWcc"
ORGS = {ME: "org-a", PEER_B: "org-b", PEER_C: "org-c"}


def record(round: int, **fields: Any) -> RoundRecord:
    base: dict[str, Any] = {
        "status": "complete",
        "started_at": time.time(),
        "members": [ME, PEER_B, PEER_C],
        "survivors": [ME, PEER_B],
        "dropped": [PEER_C],
        "protocol": "fedmkt",
        "note": f"fedmkt: {ME} learnt from {PEER_B} (37% positions aligned); nothing from x",
    }
    return RoundRecord(round=round, **{**base, **fields})


def event(round: int) -> dict[str, Any]:
    return {
        "type": "fedmkt",
        "round": round,
        "student": ME,
        "teachers": [PEER_B],
        "public_losses": {PEER_B: 2.0, ME: 3.0, PEER_C: math.inf},
        "distill": {"peer_position_fraction": 0.375, "steps": 2},
    }


def panel(records: list[RoundRecord], events: FedMKTEventLog) -> dict[str, Any]:
    return fedmkt_panel(enabled=True, me=ME, records=records, events=events, org_of=ORGS.get)


def test_round_log_alone_gives_edges_with_org_names_and_aligned_share() -> None:
    rows = [record(0, protocol=None), record(1), record(2, protocol="bfv-mask-shamir-v2")]
    (only,) = panel(rows, FedMKTEventLog())["rounds"]
    assert only["round"] == 1
    assert only["edges"] == [
        {"teacher": PEER_B, "teacher_org": "org-b", "student": ME, "student_org": "org-a"}
    ]
    assert only["aligned_fraction"] == 0.37
    assert only["public_losses"] == []  # not in the round log
    assert only["dropped"] == [PEER_C]


def test_event_adds_public_losses_self_first_and_exact_share() -> None:
    events = FedMKTEventLog()
    events.record(event(1))
    (only,) = panel([record(1)], events)["rounds"]
    assert [(e["org"], e["loss"]) for e in only["public_losses"]] == [
        ("org-a", 3.0), ("org-b", 2.0), ("org-c", None),
    ]
    assert only["aligned_fraction"] == 0.375


def test_event_log_ignores_other_and_malformed_events_and_stays_bounded() -> None:
    events = FedMKTEventLog(keep=2)
    events.record({"type": "train_step", "round": 1})
    events.record({"type": "fedmkt", "round": "1"})
    for n in (1, 2, 3):
        events.record(event(n))
    assert events.rounds() == [2, 3]


def test_note_without_share_gives_none() -> None:
    assert aligned_fraction_from_note(None) is None
    assert aligned_fraction_from_note("no group this round") is None


async def test_status_view_records_fedmkt_events_from_the_bus() -> None:
    bus = EventBus()
    daemon = SimpleNamespace(
        events=bus,
        config=SimpleNamespace(federation=SimpleNamespace(mode="fedmkt")),
        identity=SimpleNamespace(peer_id=ME),
        store=SimpleNamespace(rounds=lambda: [record(1)], events_of_kind=lambda kind: []),
        roster=SimpleNamespace(org_of=ORGS.get),
    )
    view = DaemonStatusView(daemon)  # type: ignore[arg-type]
    await asyncio.sleep(0)  # let the recorder subscribe
    bus.publish("fedmkt", **{k: v for k, v in event(1).items() if k != "type"})
    for step in range(300):  # more than a subscriber queue holds, as the loop runs them
        bus.publish("train_step", round=1, step=step, loss=1.0)
        await asyncio.sleep(0)
    data = view.fedmkt()
    assert data["enabled"] is True
    assert data["rounds"][0]["public_losses"][0] == {"peer_id": ME, "org": "org-a", "loss": 3.0}
    await view._fedmkt_events.stop()
    assert not bus._queues


def test_panel_says_which_exchange_a_round_used_from_event_or_note() -> None:
    secure_note = f"fedmkt secure exchange: {ME} learnt from the secure average of {PEER_B}"
    rows = [record(1, note=secure_note), record(2), record(3)]
    events = FedMKTEventLog()
    events.record({**event(3), "exchange": "clear"})
    by_round = {r["round"]: r for r in panel(rows, events)["rounds"]}
    assert by_round[1]["exchange"] == "secure"  # after a restart: from the round log
    assert by_round[2]["exchange"] is None  # a note from before exchanges were named
    assert by_round[3]["exchange"] == "clear"


def test_own_domain_loss_beside_the_public_one_shows_a_regression_at_home() -> None:
    rows = [
        record(0, protocol=None, status="initial", eval_loss_after=2.0),
        record(1, eval_loss_before=1.50, eval_loss_after=1.20),  # distillation helped at home
        record(2, eval_loss_before=1.10, eval_loss_after=1.21),  # and here it undid training
        record(3, eval_loss_before=None, eval_loss_after=None),  # aborted before evaluation
    ]
    data = panel(rows, FedMKTEventLog())
    first, second, third = data["rounds"]
    assert (first["own_loss_before"], first["own_loss_after"]) == (1.50, 1.20)
    assert math.isclose(first["own_loss_change"], -0.2)
    assert math.isclose(second["own_loss_change"], 0.1)
    assert third["own_loss_change"] is None
    assert data["own_loss_start"] == 2.0
    assert data["own_loss_latest"] == 1.21
