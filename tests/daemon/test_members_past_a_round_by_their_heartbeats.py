"""Which members the daemon counts as past a round's grouping, from their heartbeats.

``HeartbeatPast`` feeds ``GroupAgreement(past=)``: a member whose latest heartbeat
names a later round, or this round in a phase after grouping, will not invite or accept
any more this round (docs/aggregation.md, rule 7). Round and phase only move forward, so
an old heartbeat that says so is still believed; one that names this round while still
training or grouping, an earlier round, or a phase it does not know, is not.
"""

from __future__ import annotations

import dataclasses
import time

from fedswarm.daemon.round_runner import HeartbeatLeft, HeartbeatPast
from fedswarm.p2p.membership import PeerView


def _seen(round: int, state: str, age_s: float = 1.0) -> PeerView:
    return PeerView(last_seen=time.time() - age_s, latency_ms=None, round=round,
                    state=state, fingerprint="", addrs=())


def test_a_later_round_or_a_phase_after_grouping_is_past_and_nothing_else_is() -> None:
    views = {
        "aggregating": _seen(7, "aggregating"),
        "applying": _seen(7, "applying", age_s=300.0),  # old, still true
        "next_round": _seen(8, "training"),
        "done": _seen(7, "done"),
        "grouping": _seen(7, "grouping"),
        "training": _seen(7, "training"),
        "behind": _seen(6, "checkpointing"),
        "made_up_state": _seen(7, "finished-honest"),
    }
    past = HeartbeatPast(lambda: views, round=7)
    assert past("aggregating") and past("applying") and past("next_round") and past("done")
    assert not past("grouping") and not past("training")
    assert not past("behind")  # finishing round 6: on its way to this one
    assert not past("made_up_state")
    assert not past("never-heard-from")


def test_only_a_later_round_says_a_leader_moved_on() -> None:
    views = {"aggregating": _seen(7, "aggregating"), "next_round": _seen(8, "grouping"),
             "behind": _seen(6, "done")}
    moved_on = HeartbeatPast(lambda: views, round=7, later_round_only=True)
    assert moved_on("next_round")
    assert not moved_on("aggregating")  # it has sent its final: it may still arrive
    assert not moved_on("behind") and not moved_on("never-heard-from")


def _down(view: PeerView) -> PeerView:
    return dataclasses.replace(view, up=False)


def test_an_exchange_stops_expecting_a_member_that_moved_on_or_went_down() -> None:
    """``HeartbeatLeft`` feeds the exchange's waits (``RoundContext.moved_on``): a killed
    decryptor sends no heartbeat naming a later round, yet sends nothing more either."""
    views = {
        "next_round": _seen(8, "grouping"),
        "killed": _down(_seen(7, "aggregating", age_s=60.0)),
        "killed_behind": _down(_seen(6, "done", age_s=60.0)),
        "aggregating": _seen(7, "aggregating"),
        "late_but_up": _seen(7, "training", age_s=8.0),
    }
    left = HeartbeatLeft(lambda: views, round=7)
    assert left("next_round") and left("killed") and left("killed_behind")
    assert not left("aggregating") and not left("late_but_up")
    assert not left("never-heard-from")
    views["killed"] = _seen(7, "aggregating")  # heard again: expected again
    assert not left("killed")
