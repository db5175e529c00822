"""The emulated wire reports how late it delivered each packet."""

from __future__ import annotations

from bench.tun_switch import SwitchCounters


def test_lateness_is_counted_in_buckets_with_the_latest_kept() -> None:
    counters = SwitchCounters()
    for late_s in (0.0, 0.005, 0.05, 0.5, 2.0, 0.01):
        counters.count_late(late_s)
    report = counters.as_dict()
    assert report["late"] == {"<=10ms": 3, "<=100ms": 1, "<=1000ms": 1, ">1000ms": 1}
    assert report["late_max_s"] == 2.0
