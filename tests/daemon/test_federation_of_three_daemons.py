"""Three real daemons (separate processes, libp2p on loopback) train and average together."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fedswarm.daemon.demo.command import read_final_adapter
from fedswarm.daemon.demo.local_federation import LocalFederation
from fedswarm.learning.checkpoint_files import latest_dir
from fedswarm.learning.moment_averaging import moment_bound

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def read_final_moments(checkpoint_root: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """AdamW's exp_avg and exp_avg_sq (flattened) and step from a peer's latest checkpoint."""
    saved = torch.load(latest_dir(checkpoint_root) / "trainer_state.pt", map_location="cpu",
                       weights_only=True)
    states = [saved["optimizer"]["state"][i] for i in sorted(saved["optimizer"]["state"])]
    m, v = (torch.cat([s[key].reshape(-1).float() for s in states]).numpy()
            for key in ("exp_avg", "exp_avg_sq"))
    return m, v, float(states[0]["step"])


def assert_members_share_exp_avg(roots: list[Path], tolerance: float) -> None:
    """Every member holds the group's averaged exp_avg, except where its own exp_avg_sq
    bounds it (|m| = K_t·sqrt(v), learning/moment_averaging.py); v stays each member's own."""
    moments = [read_final_moments(root) for root in roots]
    clamped = []
    for m, v, step in moments:
        assert np.isfinite(m).all() and np.abs(m).max() > 0 and (v >= 0).all()
        limit = moment_bound(np.array([step]), 0.9, 0.999)[0] * np.sqrt(v.astype(np.float64))
        assert (np.abs(m) <= limit * (1 + 1e-5) + 1e-12).all()
        clamped.append(np.abs(m) >= limit * (1 - 1e-5))
    free = ~np.any(clamped, axis=0)
    assert free.mean() > 0.9, free.mean()
    for m, _, _ in moments[1:]:
        assert np.abs(m[free] - moments[0][0][free]).max() <= tolerance
    assert any(not np.array_equal(moments[0][1], v) for _, v, _ in moments[1:])  # own v


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
        assert status["secure_aggregation"] == "bfv-mask-shamir-v3"
        assert status["eval_loss_last"] < status["eval_loss_start"], peer.org
        aggregated = [r for r in log if r["status"] == "complete"]
        assert len(aggregated) == 2, log
        for record in aggregated:
            assert sorted(record["survivors"]) == sorted(p.peer_id for p in federation.peers)
            assert record["protocol"] == "bfv-mask-shamir-v3"
            assert record["aggregator"] != record["decryptor"]

    for peer in federation.peers:  # the HE worker was up before the first round began
        text = peer.log_path.read_text()
        assert "HE worker" in text, peer.org
        assert text.index("HE worker") < text.index("round 1 complete"), peer.org

    vectors = [read_final_adapter(p.state_dir / "checkpoint") for p in federation.peers]
    diff = max(float(np.max(np.abs(a - b))) for a in vectors for b in vectors)
    assert diff < 1e-6
    assert float(np.max(np.abs(vectors[0]))) > 0  # the adapter really trained

    # average_optimizer_state is on by default: exp_avg was averaged too. Every member
    # decodes the same sum, so it is equal within float rounding, like the adapter.
    assert_members_share_exp_avg([p.state_dir / "checkpoint" for p in federation.peers], 1e-6)


def test_plaintext_federation_says_so_and_agrees_exactly(tmp_path: Path) -> None:
    federation = LocalFederation(tmp_path, peers=3, rounds=1, secure_aggregation="none")
    with federation:
        statuses = federation.wait_rounds(1, timeout_s=600)
    assert all(s is not None and s["secure_aggregation"] == "none" for s in statuses)
    vectors = [read_final_adapter(p.state_dir / "checkpoint") for p in federation.peers]
    assert all(np.array_equal(vectors[0], v) for v in vectors[1:])
    assert_members_share_exp_avg([p.state_dir / "checkpoint" for p in federation.peers], 0.0)
