"""Three real daemons sharing one model and tokenizer run FedMKT with the secure exchange."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import tomli_w
from fedswarm.daemon.config import load_config
from fedswarm.daemon.demo.local_federation import LocalFederation
from fedswarm.daemon.state import StateStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def use_one_model(federation: LocalFederation) -> Path:
    """Point every peer at the first peer's model: a homogeneous FedMKT group."""
    shared = Path(load_config(federation.peers[0].config_path).model.path)
    for peer in federation.peers:
        document = tomllib.loads(peer.config_path.read_text())
        document["model"]["path"] = str(shared)
        peer.config_path.write_text(tomli_w.dumps(document))
    return shared


def test_homogeneous_daemons_average_knowledge_securely_and_improve(tmp_path: Path) -> None:
    federation = LocalFederation(
        tmp_path, peers=3, rounds=2, mode="fedmkt", local_steps=6, round_deadline_s=60.0,
        overrides={"fedmkt": {"distill_steps": 4}},
    )
    federation.prepare()
    shared = use_one_model(federation)
    configs = [load_config(p.config_path) for p in federation.peers]
    assert {Path(c.model.path) for c in configs} == {shared}
    assert {c.federation.secure_aggregation for c in configs} == {"bfv-mask-shamir-v3"}
    assert {c.fedmkt.homogeneous_exchange for c in configs} == {"secure"}  # the default

    with federation:
        statuses = federation.wait_rounds(2, timeout_s=420)
        rounds = [peer.get("/api/rounds") for peer in federation.peers]
        panels = [peer.get("/api/fedmkt") for peer in federation.peers]
    codes = federation.stop()

    assert all(code == 0 for code in codes.values()), codes
    everyone = sorted(p.peer_id for p in federation.peers)
    for peer, status, log, panel in zip(federation.peers, statuses, rounds, panels, strict=True):
        assert status is not None
        assert status["rounds_completed"] == 2, peer.org
        assert status["eval_loss_last"] != status["eval_loss_start"], peer.org
        distilled = [r for r in log if r["status"] == "complete"]
        assert len(distilled) == 2, log
        for record in distilled:
            assert record["protocol"] == "fedmkt"
            assert record["note"].startswith("fedmkt secure exchange:"), record["note"]
            assert sorted(record["survivors"]) == everyone
            assert record["aggregator"] in everyone and record["decryptor"] in everyone
            assert record["bytes_sent"] > 0 and record["bytes_received"] > 0
        assert [r["exchange"] for r in panel["rounds"]] == ["secure", "secure"], panel
        store = StateStore.open(peer.state_dir)
        try:
            events = store.events_of_kind("fedmkt")
        finally:
            store.close()
        assert len(events) == 2, events
        for event in events:  # what the daemon itself counted on the wire
            assert event["exchange"] == "secure"
            assert event["clear_knowledge_bytes"] == 0
            assert event["group_public_loss"] > 0
        own_losses = [e["public_losses"][peer.peer_id] for e in events]
        assert own_losses[0] != own_losses[1], "the public-set loss moved between rounds"
        # same tokenizer: no vocabulary mapping to another family was ever needed
        maps = list((peer.state_dir / "vocab-maps").glob("vocabmap-*.npz"))
        assert len(maps) <= 1, maps
