"""Group-level DP's ε reaches `fedswarm status` and /metrics (only when it is on)."""

from __future__ import annotations

import time

from fedswarm.daemon.cli import group_privacy_line
from fedswarm.daemon.views.prometheus import MetricsSnapshot, render_metrics

ON = {
    "enabled": True,
    "epsilon_spent": 2.5,
    "epsilon_target": 10.0,
    "rounds": 4,
    "delta": 1e-5,
    "noise_multiplier": 5.0,
    "colluders": 1,
}


def test_status_line() -> None:
    assert group_privacy_line({"enabled": False}) == "off"
    assert group_privacy_line(None) == "off"
    line = group_privacy_line(ON)
    assert line.startswith("ε 2.500 spent of 10 over 4 rounds")
    assert "noise multiplier 5" in line and "1 colluders" in line
    assert "of" not in group_privacy_line({**ON, "epsilon_target": None}).split("over")[0]


def test_metrics_gauge_only_when_on() -> None:
    off = render_metrics(MetricsSnapshot(state="training", up_since=time.time()))
    assert "fedswarm_group_privacy_epsilon_spent" not in off
    on = render_metrics(
        MetricsSnapshot(state="training", up_since=time.time(), group_privacy_epsilon_spent=2.5)
    )
    assert "fedswarm_group_privacy_epsilon_spent 2.5" in on
