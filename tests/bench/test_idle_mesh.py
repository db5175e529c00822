"""The idle-mesh benchmark runs real nodes in their own processes and reports what an
idle federation costs: connections, pings on reused streams, CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import idle_mesh

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_three_idle_nodes_stay_fully_connected_and_reuse_ping_streams(tmp_path: Path) -> None:
    result = idle_mesh.run(peers=3, seconds=12.0, workdir=tmp_path, start_slack_s=20.0,
                           heartbeat_s=2.0)
    assert result["nodes_failed"] == 0
    summary = result["summary"]
    assert summary["full_mesh_share"] == 1.0
    assert summary["connected_second_half_min"] == 2
    assert summary["dead_links_closed"] == 0
    # each node pings its 2 members every 5 s on one stream each
    assert summary["pings_sent"] >= 3 * 2 * 2
    assert summary["ping_streams_opened"] <= 3 * 2 + 2
    assert summary["cpu_s_median"] > 0
    # 2 other members' heartbeats every 2 s for at least the 12 s window
    assert summary["heartbeats_heard_median"] >= 2 * 6
    # the mesh window by window, counted back from the shared end
    timeline = result["timeline"]
    assert timeline, "no window in the timeline"
    ends = [w["seconds_before_end"] for w in timeline]
    assert ends == sorted(ends, reverse=True)
    assert timeline[-1]["connected_min"] == 2
    assert all(w["cores_busy"] >= 0 and w["dead_links_closed"] == 0 for w in timeline)


def test_direct_heartbeats_reach_every_member_and_spare_the_pings(tmp_path: Path) -> None:
    result = idle_mesh.run(peers=3, seconds=12.0, workdir=tmp_path, start_slack_s=20.0,
                           heartbeat_s=2.0, heartbeat_via="messages")
    assert result["nodes_failed"] == 0
    summary = result["summary"]
    assert summary["full_mesh_share"] == 1.0
    assert summary["heartbeats_heard_median"] >= 2 * 5
    # a member's beats vouch for its link: one ping each for its latency, not one every 5 s
    assert summary["pings_sent"] <= 3 * 2 * 2
