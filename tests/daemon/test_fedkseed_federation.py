"""Three real FedKSeed daemons end bit-identical, one of them killed and restarted mid-run.

Separate processes, libp2p on loopback, the daemon's own checkpoint on restart: the
parameters' fingerprints (sha256 of every weight, in each member's checkpoint) must be
equal across the three after the last round, which only a deterministic replay of the
group's K-vector gives.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from fedswarm.daemon.demo.local_federation import LocalFederation

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_three_daemons_agree_bit_for_bit_after_one_restarts(tmp_path: Path) -> None:
    federation = LocalFederation(
        tmp_path,
        peers=3,
        rounds=4,
        mode="fedkseed",
        secure_aggregation="none",
        local_steps=4,
        round_deadline_s=60.0,
        overrides={"fedkseed": {"k": 256}, "federation": {"final_averaging_rounds": 1}},
    )
    with federation:
        federation.wait_rounds(1, timeout_s=300)
        victim = federation.peers[2]
        federation.kill_peer(victim, signal.SIGKILL)
        federation.start_peer(victim)
        federation.wait_rounds(4, timeout_s=600)
        rounds = [peer.get("/api/rounds") for peer in federation.peers]
        events = federation.peers[0].get("/api/events/recent")
    codes = federation.stop()
    assert all(code == 0 for code in codes.values()), codes

    metas = [federation.checkpoint_meta(peer) for peer in federation.peers]
    assert [m["round"] for m in metas] == [4, 4, 4]
    prints = {m["parameters_fingerprint"] for m in metas}
    assert len(prints) == 1, metas
    assert len({m["adapter_fingerprint"] for m in metas}) == 1
    for log in rounds:
        last = [r for r in log if r["round"] == 4]
        assert last and last[-1]["status"] == "complete", log
        assert len(last[-1]["survivors"]) == 3
    assert "resumed from checkpoint" in victim.log_path.read_text()
    kseed = [e for e in events if e["type"] == "fedkseed"]  # the dashboard's event
    assert kseed and kseed[-1]["parameters_fingerprint"] in prints
    assert kseed[-1]["bytes_sent"] == 2 * (16 + 4 * 2 * 256)  # K scalars + K amplitudes
