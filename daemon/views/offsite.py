"""The dashboard's offsite panel: who holds what, what the emulator reveals, each round's loss.

Three sources, none of them new state: the package on disk (its manifest's sizes and
``offsite.json``'s layout and distillation, read once per package), the daemon's
``OffsiteStart`` (our role, and for a member how far the package fetch got), and the
store (the round log's losses and bytes; the owner's ``offsite_plugged_in`` events,
which the runner keeps so the panel survives restarts). A member's eval loss is that of
the emulator with its adapter layers; the owner's is its plugged-in full model's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedswarm.learning.offsite.layout import OffsiteLayout
from fedswarm.learning.offsite.manifest import MANIFEST_FILE, read_manifest
from fedswarm.learning.offsite.package import LAYOUT_FILE, OffsitePackage

from ..state import RoundRecord

EVENT = "offsite_plugged_in"


@dataclass(frozen=True)
class PackageFacts:
    """What the panel shows of a verified package; read once (two small files)."""

    package_id: str
    bytes: int
    files: int
    layout: OffsiteLayout
    distill_steps: int

    @classmethod
    def read(cls, package: OffsitePackage) -> PackageFacts:
        _, entries = read_manifest(package.path)  # already verified: sizes only, no hashing
        size = sum(e.size for e in entries) + (package.path / MANIFEST_FILE).stat().st_size
        try:
            meta = json.loads((package.path / LAYOUT_FILE).read_text(encoding="utf-8"))
            steps = int(meta.get("distillation", {}).get("steps", 0))
        except (OSError, ValueError, TypeError, AttributeError):
            steps = 0
        return cls(package.package_id, size, len(entries) + 1, package.layout, steps)

    def as_dict(self) -> dict[str, Any]:
        layout = self.layout
        kept = set(layout.emulator_to_full())
        return {
            "package_id": self.package_id,
            "bytes": self.bytes,
            "files": self.files,
            "layers_total": layout.total,
            "layers_in_package": layout.emulator_layers,
            "adapter_layers": {"bottom": layout.bottom, "top": layout.top},
            "middle_layers": layout.middle,
            "middle_kept": layout.keep,
            "kept_middle": layout.kept_middle(),
            "never_sent": [i for i in range(layout.total) if i not in kept],
            "distill_steps": self.distill_steps,
        }


def reveals(layout: OffsiteLayout, distill_steps: int) -> str:
    """One line, from the layout: what a member holds of the owner's model."""
    kept = set(layout.emulator_to_full())
    withheld = [str(i) for i in range(layout.total) if i not in kept]
    how = (f"distilled for {distill_steps} steps towards the full middle" if distill_steps
           else "not distilled")
    return (
        f"Members hold {layout.emulator_layers} of the owner's {layout.total} layers: its "
        f"bottom {layout.bottom} and top {layout.top} (the adapters, which they train) and "
        f"{layout.keep} of the {layout.middle} middle layers ({how}), plus its embeddings "
        f"and head; layer{'s' if len(withheld) > 1 else ''} {', '.join(withheld)} never "
        f"leave{'' if len(withheld) > 1 else 's'} the owner."
    )


def _fetch(state: str, have: int, total: int | None) -> dict[str, Any]:
    return {"state": state, "bytes_fetched": have, "bytes_total": total}


def offsite_panel(
    *,
    enabled: bool,
    is_owner: bool,
    owner: str | None,
    owner_org: str | None,
    package_id: str | None,
    package: PackageFacts | None,
    fetch: tuple[str, int, int | None] | None,
    records: Iterable[RoundRecord],
    events: Iterable[dict[str, Any]],
    export_dir: Path | None,
) -> dict[str, Any]:
    """``GET /api/offsite``: ``{"enabled", "role", "owner", "owner_org", "package_id",
    "package", "reveals", "fetch", "owner_state", "rounds"}`` (rounds oldest first)."""
    if not enabled:
        return {"enabled": False, "role": None, "owner": None, "owner_org": None,
                "package_id": None, "package": None, "reveals": None, "fetch": None,
                "owner_state": None, "rounds": []}
    plugged: dict[int, dict[str, Any]] = {}
    for event in events:
        if isinstance(event.get("round"), int):
            plugged[event["round"]] = event
    rounds = [
        {
            "round": r.round,
            "status": r.status,
            "eval_loss_before": r.eval_loss_before,
            "eval_loss_after": r.eval_loss_after,
            "train_loss": r.train_loss,
            "bytes_sent": r.bytes_sent,
            "bytes_received": r.bytes_received,
            "survivors": len(r.survivors) if r.survivors is not None else None,
            "plugged_in": r.round in plugged if is_owner else None,
            "confirmed_by": plugged.get(r.round, {}).get("confirmed_by"),
        }
        for r in sorted(records, key=lambda r: r.round)
        if r.round > 0
    ]
    owner_state = None
    if is_owner:
        last = max(plugged) if plugged else None
        written = None
        if export_dir is not None:
            try:
                written = export_dir.stat().st_mtime
            except OSError:
                written = None
        owner_state = {
            "rounds_plugged_in": len(plugged),
            "last_plugged_in_round": last,
            "last_plugged_in_at": plugged[last].get("at") if last is not None else None,
            "export_dir": str(export_dir) if export_dir is not None else None,
            "export_written_at": written,
        }
    state, have, total = fetch if fetch is not None else ("verified", 0, None)
    if package is not None and state == "verified":
        have = total = package.bytes
    return {
        "enabled": True,
        "role": "model_owner" if is_owner else "member",
        "owner": owner,
        "owner_org": owner_org,
        "package_id": package.package_id if package is not None else package_id,
        "package": package.as_dict() if package is not None else None,
        "reveals": reveals(package.layout, package.distill_steps) if package else None,
        "fetch": None if is_owner else _fetch(state, have, total),
        "owner_state": owner_state,
        "rounds": rounds,
    }
