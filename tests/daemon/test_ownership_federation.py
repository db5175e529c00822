"""Three real daemons with [ownership] and secure aggregation: every member finds its mark.

The averaged vector grows by the norm scales' deltas; the federation must still agree
(secure aggregation over the longer vector), and each member's key must read its own bits
off the exported federated model with ``fedswarm ownership verify``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fedswarm.daemon.demo.local_federation import LocalFederation
from fedswarm.learning.checkpoint_files import latest_dir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedswarm.daemon.cli", *args],
                          capture_output=True, text=True, timeout=300)


def scale_deltas(checkpoint_root: Path) -> np.ndarray:
    saved = torch.load(latest_dir(checkpoint_root) / "trainer_state.pt", map_location="cpu",
                       weights_only=True)
    return torch.cat([saved["scale_deltas"][n] for n in sorted(saved["scale_deltas"])]).numpy()


def test_each_member_verifies_its_mark_on_the_secure_federations_export(
        tmp_path: Path) -> None:
    federation = LocalFederation(tmp_path, peers=3, rounds=2,
                                 overrides={"ownership": {"enabled": True, "bits": 32}})
    with federation:
        federation.wait_rounds(2, timeout_s=600)
    codes = federation.stop()
    assert all(code == 0 for code in codes.values()), codes

    deltas = [scale_deltas(p.state_dir / "checkpoint") for p in federation.peers]
    assert float(np.max(np.abs(deltas[0]))) > 0
    assert max(float(np.max(np.abs(d - deltas[0]))) for d in deltas) < 1e-6

    first = federation.peers[0]
    export = cli("export", "--config", str(first.config_path), "--out", str(tmp_path / "out"))
    assert export.returncode == 0, export.stderr
    for peer in federation.peers:
        verify = cli("ownership", "verify", "--config", str(peer.config_path),
                     "--adapter", str(tmp_path / "out"))
        assert verify.returncode == 0, verify.stderr
        found = re.search(r": ([0-9.]+) of 32 bits detected", verify.stdout)
        assert found is not None, verify.stdout
        assert float(found.group(1)) >= 0.9, (peer.org, verify.stdout)
