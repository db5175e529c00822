"""Group-level DP (issue #21) between real daemons: libp2p on loopback, protocol v3 with
two 24-bit fields per slot, Skellam noise from each member, the release accounted.

In-process tests check the noise's variance, the clip and the accountant; here three
daemons run it through the product path, so the noise settings bound into the mask keys,
the wider fields and the persisted spend are exercised together: rounds complete, every
member ends with the same (noisy) adapter, and each says what it spent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fedswarm.daemon.demo.command import read_final_adapter
from fedswarm.daemon.demo.local_federation import LocalFederation

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

GROUP_DP = {"group_noise_multiplier": 2.0, "group_update_clip": 0.5, "colluders": 0}


def test_three_daemons_add_group_noise_agree_and_account_each_release(tmp_path: Path) -> None:
    federation = LocalFederation(tmp_path, peers=3, rounds=2, local_steps=2, batch_size=4,
                                 overrides={"privacy": dict(GROUP_DP)})
    with federation:
        federation.wait_rounds(2, timeout_s=420)
        rounds = [peer.get("/api/rounds") for peer in federation.peers]
        statuses = [peer.get("/api/status") for peer in federation.peers]
    for log in rounds:
        complete = [r for r in log if r["status"] == "complete"]
        assert len(complete) == 2, log
        assert all(r["protocol"] == "bfv-mask-shamir-v3" for r in complete)
    for status in statuses:
        spent = status["group_privacy"]
        assert spent["enabled"] is True, spent
        assert spent["rounds"] == 2, spent
        assert 0 < spent["epsilon_spent"] < float("inf"), spent
        assert spent["noise_multiplier"] == 2.0, spent
    adapters = [read_final_adapter(p.state_dir / "checkpoint") for p in federation.peers]
    assert all(np.isfinite(a).all() for a in adapters)
    for other in adapters[1:]:  # one group of everyone: the same noisy sum, the same model
        assert np.abs(other - adapters[0]).max() < 1e-6
