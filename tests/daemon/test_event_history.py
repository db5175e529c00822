"""The daemon remembers its recent events, so a dashboard opened late has a history."""

from __future__ import annotations

from fedswarm.daemon.events import HISTORY_SIZE, EventBus


def test_event_bus_remembers_recent_events_but_not_every_training_step() -> None:
    bus = EventBus()
    bus.publish("round_started", round=1)
    for step in range(100):
        bus.publish("train_step", round=1, step=step, loss=1.0)
    bus.publish("round_finished", round=1, status="complete")
    assert [e["type"] for e in bus.recent()] == ["round_started", "round_finished"]
    for n in range(HISTORY_SIZE + 5):
        bus.publish("state", state="training", round=n)
    recent = bus.recent()
    assert len(recent) == HISTORY_SIZE and recent[-1]["round"] == HISTORY_SIZE + 4
