"""``mode = "offsite"`` between real daemons: one model owner and three data members.

The members fetch the owner's package over libp2p at start-up (hash-checked), train the
adapter layers, average their change in one group, and hand the owner the result,
which it plugs into its full model and exports. Nobody but the owner holds the model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch
from fedswarm.daemon.demo.local_federation import LocalFederation
from fedswarm.learning.adapter_vector import flatten_state
from fedswarm.learning.checkpoint_files import latest_dir
from fedswarm.learning.demo_assets import build_demo_model
from fedswarm.learning.offsite import OwnerModel, build_package, open_package
from fedswarm.p2p.roster import Roster
from safetensors.torch import load_file

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _edit(config: Path, **tables: dict[str, object]) -> None:
    document = tomllib.loads(config.read_text())
    for name, values in tables.items():
        document.setdefault(name, {}).update(values)
    config.write_text(tomli_w.dumps(document))


def _offsite_federation(tmp_path: Path, rounds: int) -> tuple[LocalFederation, Path, str]:
    """Peer 1 is the model owner of a deep-8 model, peers 2-4 its data members."""
    federation = LocalFederation(tmp_path, peers=4, rounds=rounds, mode="offsite",
                                 secure_aggregation="none", local_steps=3, batch_size=4,
                                 round_deadline_s=30.0)
    federation.prepare()
    full = build_demo_model(tmp_path / "owner-model", variant="deep-8", pretrain_steps=5)
    owner = federation.peers[0]
    package = build_package(full, owner.directory / "package", keep=2, bottom=2, top=2)

    roster = Roster.load(owner.directory / "roster.toml")
    roster = Roster(roster.federation_id, tuple(
        dataclasses.replace(m, role="model_owner") if m.peer_id == owner.peer_id else m
        for m in roster.members))
    for peer in federation.peers:
        roster.save(peer.directory / "roster.toml")
        _edit(peer.config_path, offsite={"package_id": package.package_id})
    _edit(owner.config_path, offsite={"package_dir": "package"}, model={"path": str(full)})
    return federation, full, package.package_id


def _checkpoint_vector(peer_state: Path) -> np.ndarray:
    """A member's adapter layers, or the owner's plugged-in vector, from its last checkpoint."""
    path = latest_dir(peer_state / "checkpoint")
    if (path / "plugged_in.npy").exists():
        return np.load(path / "plugged_in.npy")
    state = torch.load(next(path.glob("*.pt")), map_location="cpu", weights_only=True)
    return flatten_state(state["adapter"])[0]


def test_owner_and_three_members_complete_two_offsite_rounds(tmp_path: Path) -> None:
    federation, full, package_id = _offsite_federation(tmp_path, rounds=2)
    owner, members = federation.peers[0], federation.peers[1:]
    with federation:
        statuses = federation.wait_rounds(2, timeout_s=600)
        logs = [peer.get("/api/rounds") for peer in federation.peers]
        panels = [peer.get("/api/offsite") for peer in federation.peers]
    codes = federation.stop()
    assert all(code == 0 for code in codes.values()), codes
    assert all(s is not None and s["rounds_completed"] == 2 for s in statuses), statuses

    # the dashboard's Offsite panel, from the real daemons
    plugged = panels[0]["owner_state"]
    assert panels[0]["role"] == "model_owner" and panels[0]["fetch"] is None
    assert (plugged["rounds_plugged_in"], plugged["last_plugged_in_round"]) == (2, 2)
    assert plugged["export_written_at"] is not None
    for panel in panels[1:]:
        assert (panel["role"], panel["fetch"]["state"]) == ("member", "verified")
        assert panel["package"]["package_id"] == package_id
        assert panel["package"]["never_sent"] == [3, 5]
        assert "Members hold 6 of the owner's 8 layers" in panel["reveals"]
        assert all(r["eval_loss_after"] is not None for r in panel["rounds"]
                   if r["status"] == "complete")

    member_ids = sorted(p.peer_id for p in members)
    for peer, log in zip(members, logs[1:], strict=True):
        complete = [r for r in log if r["status"] == "complete"]
        assert len(complete) == 2, (peer.org, log)
        assert all(sorted(r["survivors"]) == member_ids for r in complete)
    owner_rounds = [r for r in logs[0] if r["status"] == "complete"]
    assert len(owner_rounds) == 2, logs[0]
    assert all(r["protocol"] == "offsite-owner" and sorted(r["survivors"]) == member_ids
               for r in owner_rounds)

    # members hold the package only: no file of theirs is the full model's weights
    full_weights = {_sha256(p) for p in full.glob("*.safetensors")}
    for peer in members:
        fetched = peer.state_dir / "offsite-package"
        assert _sha256(fetched / "offsite_manifest.json") == package_id
        assert json.loads((fetched / "config.json").read_text())["num_hidden_layers"] == 6
        held = {_sha256(p) for p in peer.directory.rglob("*") if p.is_file()}
        assert not held & full_weights, peer.org

    # the owner's export is its full model with the averaged adapter layers plugged in
    export = owner.state_dir / "offsite-export"
    before = load_file(str(next(full.glob("*.safetensors"))))
    after = load_file(str(next(export.glob("*.safetensors"))))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(".layers.0." in k for k in changed) and any(".layers.7." in k for k in changed)
    assert not any(f".layers.{i}." in k for k in changed for i in range(2, 6)), changed


def test_an_owner_killed_mid_run_loses_nothing(tmp_path: Path) -> None:
    """The owner is killed after round 1; the members finish without it; restarted, it
    adopts the adapter layers the members hold (their last average) and exports them."""
    federation, full, _ = _offsite_federation(tmp_path, rounds=3)
    owner, members = federation.peers[0], federation.peers[1:]
    with federation:
        federation.wait_rounds(1, timeout_s=600, peers=[owner])
        federation.kill_peer(owner)
        federation.wait_rounds(3, timeout_s=600, peers=members)
        federation.start_peer(owner)
        federation.wait_rounds(3, timeout_s=300, peers=[owner])
        owner_log = owner.get("/api/rounds")
    codes = federation.stop()
    assert all(code == 0 for code in codes.values()), codes

    finals = [_checkpoint_vector(p.state_dir) for p in members]
    assert all(np.array_equal(finals[0], v) for v in finals[1:])
    assert np.array_equal(_checkpoint_vector(owner.state_dir), finals[0])
    assert any(r["status"] == "caught_up" for r in owner_log), owner_log
    # the export is the full model with the members' final layers plugged in
    expected = OwnerModel(full, open_package(owner.directory / "package"), device="cpu")
    expected.plug_in_vector(finals[0])
    exported = load_file(str(next((owner.state_dir / "offsite-export").glob("*.safetensors"))))
    for name, tensor in expected.model.state_dict().items():
        if name in exported:
            assert torch.allclose(exported[name], tensor.to(exported[name].dtype)), name
