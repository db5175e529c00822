"""The offsite panel: our role, the package's layout and size, the fetch, and each round."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fedswarm.daemon.state import RoundRecord
from fedswarm.daemon.views.offsite import PackageFacts, offsite_panel
from fedswarm.daemon.views.status import DaemonStatusView
from fedswarm.learning.offsite import open_package
from fedswarm.learning.offsite.manifest import write_manifest
from fedswarm.learning.offsite.package import LAYOUT_FILE


@pytest.fixture
def package(tmp_path: Path) -> Any:
    """A package on disk with a real layout (12 layers, adapters 2+1, keep 3); fake weights."""
    folder = tmp_path / "package"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"w" * 5000)
    layout = {"total": 12, "bottom": 2, "top": 1, "keep": 3}
    meta = {"format": 1, "layout": layout, "distillation": {"steps": 50}}
    (folder / LAYOUT_FILE).write_text(json.dumps(meta))
    return open_package(folder, write_manifest(folder))


RECORDS = [
    RoundRecord(round=0, status="initial", started_at=0.0, eval_loss_after=1.2),
    RoundRecord(round=2, status="aborted", started_at=2.0),
    RoundRecord(round=1, status="complete", started_at=1.0, eval_loss_before=1.2,
                eval_loss_after=0.9, train_loss=1.0, bytes_sent=7000, bytes_received=6000,
                survivors=["a", "b", "c"]),
]


def test_a_member_sees_the_package_it_verified_and_what_it_reveals(package: Any) -> None:
    facts = PackageFacts.read(package)
    panel = offsite_panel(
        enabled=True, is_owner=False, owner="owner-id", owner_org="bank",
        package_id=package.package_id, package=facts, fetch=("verified", 5100, 5100),
        records=RECORDS, events=[], export_dir=None,
    )
    assert (panel["role"], panel["owner_org"], panel["owner_state"]) == ("member", "bank", None)
    layers = panel["package"]
    assert (layers["layers_total"], layers["layers_in_package"], layers["adapter_layers"]) == (
        12, 6, {"bottom": 2, "top": 1})
    assert layers["kept_middle"] == [2, 5, 8] and layers["never_sent"] == [3, 4, 6, 7, 9, 10]
    size = sum(p.stat().st_size for p in package.path.iterdir())
    assert layers["bytes"] == size and panel["fetch"] == {
        "state": "verified", "bytes_fetched": size, "bytes_total": size}
    # the reveal line is the layout's, not the benchmark's 8-layer numbers
    assert "6 of the owner's 12 layers" in panel["reveals"]
    assert "3 of the 9 middle layers (distilled for 50 steps" in panel["reveals"]
    assert "layers 3, 4, 6, 7, 9, 10 never leave the owner" in panel["reveals"]
    first, second = panel["rounds"]
    assert (first["round"], first["eval_loss_after"], first["bytes_sent"], first["survivors"]) == (
        1, 0.9, 7000, 3)
    assert (second["round"], second["status"], first["plugged_in"]) == (2, "aborted", None)


def test_the_reveal_line_follows_any_layout() -> None:
    from fedswarm.daemon.views.offsite import reveals
    from fedswarm.learning.offsite import OffsiteLayout

    line = reveals(OffsiteLayout(total=5, bottom=1, top=1, keep=2), 0)
    assert line.startswith("Members hold 4 of the owner's 5 layers")
    assert "(not distilled)" in line and line.endswith("layer 3 never leaves the owner.")


def test_a_member_still_fetching_shows_bytes_and_the_published_id() -> None:
    panel = offsite_panel(
        enabled=True, is_owner=False, owner="o", owner_org="bank", package_id="ab" * 32,
        package=None, fetch=("fetching", 4 << 20, 10 << 20), records=[], events=[],
        export_dir=None,
    )
    assert panel["package_id"] == "ab" * 32 and panel["package"] is None
    assert panel["reveals"] is None
    assert panel["fetch"] == {"state": "fetching", "bytes_fetched": 4 << 20,
                              "bytes_total": 10 << 20}


def test_the_owner_sees_rounds_plugged_in_and_its_export(package: Any, tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    events = [{"round": 1, "confirmed_by": 3, "heard_from": 3, "at": 100.0}, {"round": "x"}]
    panel = offsite_panel(
        enabled=True, is_owner=True, owner="me", owner_org="bank",
        package_id=package.package_id, package=PackageFacts.read(package),
        fetch=("verified", 0, None), records=RECORDS, events=events, export_dir=export,
    )
    assert panel["role"] == "model_owner" and panel["fetch"] is None
    state = panel["owner_state"]
    assert (state["rounds_plugged_in"], state["last_plugged_in_round"],
            state["last_plugged_in_at"]) == (1, 1, 100.0)
    assert state["export_dir"] == str(export)
    assert state["export_written_at"] == export.stat().st_mtime
    first, second = panel["rounds"]
    assert (first["plugged_in"], first["confirmed_by"]) == (True, 3)
    assert (second["plugged_in"], second["confirmed_by"]) == (False, None)
    missing = offsite_panel(
        enabled=True, is_owner=True, owner="me", owner_org=None, package_id=None,
        package=None, fetch=None, records=[], events=[], export_dir=tmp_path / "none",
    )["owner_state"]
    assert (missing["rounds_plugged_in"], missing["export_written_at"]) == (0, None)


def _daemon(mode: str, offsite: Any) -> Any:
    return SimpleNamespace(
        config=SimpleNamespace(federation=SimpleNamespace(mode=mode)), store=None,
        offsite=offsite, roster=SimpleNamespace(org_of=lambda peer: {"o": "bank"}.get(peer)),
    )


def test_the_status_view_reads_the_daemon_and_is_off_in_other_modes(package: Any) -> None:
    start = SimpleNamespace(
        is_owner=False, owner="o", settings=SimpleNamespace(package_id=package.package_id),
        package=package, fetch_state="verified", fetched_bytes=5000, package_bytes=5000,
        role=SimpleNamespace(export_dir=None),
    )
    panel = DaemonStatusView(_daemon("offsite", start)).offsite()
    assert (panel["enabled"], panel["role"], panel["owner_org"]) == (True, "member", "bank")
    assert panel["package"]["layers_in_package"] == 6 and panel["rounds"] == []
    off = DaemonStatusView(_daemon("lora_avg", None)).offsite()
    assert off["enabled"] is False and off["rounds"] == [] and off["package"] is None
