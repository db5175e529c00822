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

import pytest
import tomli_w
import torch
from fedswarm.daemon.demo.local_federation import LocalFederation
from fedswarm.learning.demo_assets import build_demo_model
from fedswarm.learning.offsite import build_package
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


def test_owner_and_three_members_complete_two_offsite_rounds(tmp_path: Path) -> None:
    federation = LocalFederation(tmp_path, peers=4, rounds=2, mode="offsite",
                                 secure_aggregation="none", local_steps=3, batch_size=4)
    federation.prepare()
    full = build_demo_model(tmp_path / "owner-model", variant="deep-8", pretrain_steps=5)
    owner, members = federation.peers[0], federation.peers[1:]
    package = build_package(full, owner.directory / "package", keep=2, bottom=2, top=2)

    roster = Roster.load(owner.directory / "roster.toml")
    roster = Roster(roster.federation_id, tuple(
        dataclasses.replace(m, role="model_owner") if m.peer_id == owner.peer_id else m
        for m in roster.members))
    for peer in federation.peers:
        roster.save(peer.directory / "roster.toml")
        _edit(peer.config_path, offsite={"package_id": package.package_id})
    _edit(owner.config_path, offsite={"package_dir": "package"}, model={"path": str(full)})

    with federation:
        statuses = federation.wait_rounds(2, timeout_s=600)
        logs = [peer.get("/api/rounds") for peer in federation.peers]
    codes = federation.stop()
    assert all(code == 0 for code in codes.values()), codes
    assert all(s is not None and s["rounds_completed"] == 2 for s in statuses), statuses

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
        assert _sha256(fetched / "offsite_manifest.json") == package.package_id
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
