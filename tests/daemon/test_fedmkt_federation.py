"""Three real daemons with two different models and tokenizer families run FedMKT rounds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fedswarm.daemon.config import load_config
from fedswarm.daemon.demo.local_federation import LocalFederation

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def tokenizer_family(model_dir: Path) -> str:
    return str(json.loads((model_dir / "tokenizer.json").read_text())["model"]["type"])


def test_heterogeneous_daemons_complete_two_fedmkt_rounds_and_improve(tmp_path: Path) -> None:
    federation = LocalFederation(
        tmp_path, peers=3, rounds=2, mode="fedmkt", local_steps=10,
        # heterogeneous models: the clear exchange must be asked for (secure never downgrades)
        overrides={"fedmkt": {"distill_steps": 6, "homogeneous_exchange": "clear"}},
    )
    federation.prepare()
    configs = [load_config(p.config_path) for p in federation.peers]
    model_dirs = [Path(c.model.path) for c in configs]
    assert model_dirs[0] == model_dirs[2] != model_dirs[1]
    assert {tokenizer_family(d) for d in model_dirs} == {"BPE", "Unigram"}
    assert len({c.fedmkt.public_sha256 for c in configs}) == 1

    with federation:
        statuses = federation.wait_rounds(2, timeout_s=420)
        rounds = [peer.get("/api/rounds") for peer in federation.peers]
    codes = federation.stop()

    assert all(code == 0 for code in codes.values()), codes
    everyone = sorted(p.peer_id for p in federation.peers)
    for peer, status, log in zip(federation.peers, statuses, rounds, strict=True):
        assert status is not None
        assert status["rounds_completed"] == 2, peer.org
        assert status["eval_loss_last"] < status["eval_loss_start"], peer.org
        distilled = [r for r in log if r["status"] == "complete"]
        assert len(distilled) == 2, log
        for record in distilled:
            assert record["protocol"] == "fedmkt"
            assert sorted(record["survivors"]) == everyone
            assert record["bytes_sent"] > 0 and record["bytes_received"] > 0
            assert "learnt from" in record["note"]
        # each daemon cached the vocabulary mapping of the other tokenizer family
        assert list((peer.state_dir / "vocab-maps").glob("vocabmap-*.npz")), peer.org
