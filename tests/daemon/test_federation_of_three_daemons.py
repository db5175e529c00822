"""Three real daemons (separate processes, libp2p on loopback) train and average together."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fedswarm.daemon.demo import read_final_adapter
from fedswarm.daemon.federation_runner import LocalFederation
from fedswarm.learning.checkpoint_files import latest_dir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def read_final_moments(checkpoint_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """AdamW's exp_avg and exp_avg_sq from a peer's latest checkpoint, flattened."""
    saved = torch.load(latest_dir(checkpoint_root) / "trainer_state.pt", map_location="cpu",
                       weights_only=True)
    states = [saved["optimizer"]["state"][i] for i in sorted(saved["optimizer"]["state"])]
    return tuple(torch.cat([s[key].reshape(-1).float() for s in states]).numpy()
                 for key in ("exp_avg", "exp_avg_sq"))  # type: ignore[return-value]


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

    # average_optimizer_state is on by default: the moments were averaged too.
    moments = [read_final_moments(p.state_dir / "checkpoint") for p in federation.peers]
    for m, v in moments:
        assert np.abs(m).max() > 0 and (v >= 0).all() and v.max() > 0
        # Every member decodes the same sum: equal within float rounding, like the adapter.
        assert np.abs(m - moments[0][0]).max() < 1e-6
        assert np.abs(v - moments[0][1]).max() < 1e-9


def test_plaintext_federation_says_so_and_agrees_exactly(tmp_path: Path) -> None:
    federation = LocalFederation(tmp_path, peers=3, rounds=1, secure_aggregation="none")
    with federation:
        statuses = federation.wait_rounds(1, timeout_s=600)
    assert all(s is not None and s["secure_aggregation"] == "none" for s in statuses)
    vectors = [read_final_adapter(p.state_dir / "checkpoint") for p in federation.peers]
    assert all(np.array_equal(vectors[0], v) for v in vectors[1:])
    moments = [read_final_moments(p.state_dir / "checkpoint") for p in federation.peers]
    assert np.abs(moments[0][0]).max() > 0
    assert all(np.array_equal(moments[0][k], m[k]) for m in moments[1:] for k in (0, 1))
