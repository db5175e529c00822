"""The FedKSeed panel joins the round log with the mode's recorded events, by round."""

from __future__ import annotations

from fedswarm.daemon.state import RoundRecord
from fedswarm.daemon.views.fedkseed import fedkseed_panel


def test_rounds_carry_the_log_and_the_event_of_the_same_round() -> None:
    records = [
        RoundRecord(round=0, status="initial", started_at=0.0, eval_loss_after=0.9),
        RoundRecord(
            round=2, status="local_only", started_at=2.0, train_loss=0.7, eval_loss_after=0.8
        ),
        RoundRecord(
            round=1,
            status="complete",
            started_at=1.0,
            train_loss=0.8,
            eval_loss_after=0.85,
            bytes_sent=16416,
            bytes_received=16416,
        ),
    ]
    events = [
        {
            "round": 1,
            "k": 1024,
            "group": 3,
            "seeds_used": 42,
            "clipped": 0,
            "replay_s": 0.1,
            "parameters_fingerprint": "abc",
        },
        {"round": "junk"},
    ]
    panel = fedkseed_panel(enabled=True, records=records, events=events)
    assert panel["enabled"] is True and panel["k"] == 1024
    first, second = panel["rounds"]
    assert (first["round"], first["bytes_sent"], first["seeds_used"], first["eval_loss_after"]) == (
        1,
        16416,
        42,
        0.85,
    )
    assert (second["round"], second["status"], second["seeds_used"]) == (2, "local_only", None)
    assert fedkseed_panel(enabled=False, records=[], events=[]) == {
        "enabled": False,
        "k": None,
        "rounds": [],
    }
