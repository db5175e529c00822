"""Address announcements: a burst when a node starts or its addresses change, then a
slow refresh — not one every few seconds for ever, which cost 32 idle members most of
two cores (docs/reliability.md)."""

from __future__ import annotations

from fedswarm.p2p.announce_schedule import AnnounceSchedule
from fedswarm.p2p.config import NodeConfig


def _announced_at(schedule: AnnounceSchedule, addrs_at: dict[int, list[str]],
                  until_s: int) -> list[int]:
    """Seconds (1 s maintenance passes) at which the schedule announced."""
    addrs = addrs_at[0]
    times = []
    for now in range(until_s):
        addrs = addrs_at.get(now, addrs)
        if schedule.due(float(now), addrs):
            times.append(now)
    return times


def test_a_new_node_announces_a_burst_then_refreshes_slowly() -> None:
    schedule = AnnounceSchedule(interval_s=5.0, burst=3, refresh_s=60.0)
    times = _announced_at(schedule, {0: ["/ip4/10.0.0.1/tcp/1"]}, until_s=200)
    assert times == [0, 5, 10, 15, 75, 135, 195]


def test_changed_addresses_start_a_new_burst() -> None:
    schedule = AnnounceSchedule(interval_s=5.0, burst=2, refresh_s=60.0)
    times = _announced_at(schedule, {0: ["/ip4/10.0.0.1/tcp/1"], 30: ["/ip4/10.0.0.2/tcp/1"]},
                          until_s=101)
    assert times == [0, 5, 10, 30, 35, 40, 100]


def test_the_default_refresh_comes_before_announcements_go_stale() -> None:
    config = NodeConfig()
    assert config.announce_refresh_s < config.gossip_max_age_s
