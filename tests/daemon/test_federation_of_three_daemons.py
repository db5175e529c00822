"""Three real daemons (separate processes, libp2p on loopback) train and average together."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fedswarm.daemon.demo import read_final_adapter
from fedswarm.daemon.federation_runner import LocalFederation

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_three_daemons_complete_two_secure_rounds_and_agree(tmp_path: Path) -> None:
    federation = LocalFederation(tmp_path, peers=3, rounds=2)
    with federation:
        statuses = federation.wait_rounds(2, timeout_s=600)
        rounds = [peer.get("/api/rounds") for peer in federation.peers]
    codes = federation.stop()

    assert all(code == 0 for code in codes.values()), codes
    for peer, status, log in zip(federation.peers, statuses, rounds, strict=True):
        assert status is not None
        assert status["rounds_completed"] == 2
        assert status["secure_aggregation"] == "bfv-mask-shamir-v2"
        assert status["eval_loss_last"] < status["eval_loss_start"], peer.org
        aggregated = [r for r in log if r["status"] == "complete"]
        assert len(aggregated) == 2, log
        for record in aggregated:
            assert sorted(record["survivors"]) == sorted(p.peer_id for p in federation.peers)
            assert record["protocol"] == "bfv-mask-shamir-v2"
            assert record["aggregator"] != record["decryptor"]

    for peer in federation.peers:  # the HE worker was up before the first round began
        text = peer.log_path.read_text()
        assert "HE worker" in text, peer.org
        assert text.index("HE worker") < text.index("round 1 complete"), peer.org

    vectors = [read_final_adapter(p.state_dir / "checkpoint") for p in federation.peers]
    diff = max(float(np.max(np.abs(a - b))) for a in vectors for b in vectors)
    assert diff < 1e-6
    assert float(np.max(np.abs(vectors[0]))) > 0  # the adapter really trained


def test_plaintext_federation_says_so_and_agrees_exactly(tmp_path: Path) -> None:
    federation = LocalFederation(tmp_path, peers=3, rounds=1, secure_aggregation="none")
    with federation:
        statuses = federation.wait_rounds(1, timeout_s=600)
    assert all(s is not None and s["secure_aggregation"] == "none" for s in statuses)
    vectors = [read_final_adapter(p.state_dir / "checkpoint") for p in federation.peers]
    assert all(np.array_equal(vectors[0], v) for v in vectors[1:])
