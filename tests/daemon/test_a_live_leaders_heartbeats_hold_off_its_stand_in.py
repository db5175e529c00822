"""The daemon waits for a planned member whose heartbeats say it still works on the round.

``HeartbeatAwaited`` feeds ``GroupAgreement(awaited=)``: no stand-in replaces a member
heard from within a few heartbeat intervals that names this round or an earlier one
(docs/aggregation.md, rule 5).
"""

from __future__ import annotations

import time

from fedswarm.daemon.round_runner import HeartbeatAwaited
from fedswarm.p2p.membership import PeerView


def _seen(age_s: float, round: int) -> PeerView:
    return PeerView(last_seen=time.time() - age_s, latency_ms=None, round=round,
                    state="training", fingerprint="", addrs=())


def test_only_a_fresh_heartbeat_at_this_round_or_before_holds_off_the_stand_in() -> None:
    views = {"slow": _seen(1.0, 7), "behind": _seen(1.0, 6), "crashed": _seen(30.0, 7),
             "ahead": _seen(1.0, 8)}
    awaited = HeartbeatAwaited(lambda: views, round=7, fresh_s=6.0)
    assert awaited("slow") and awaited("behind")
    assert not awaited("crashed")  # heartbeats stopped: still listed up, but silent
    assert not awaited("ahead")  # already past this round: it will not lead it
    assert not awaited("never-heard-from")
