"""``fedswarm demo``: a real federation of daemons on this machine, start to finish.

It builds the bundled tiny model and one non-IID data shard per peer, starts each
peer as its own ``fedswarm run`` process on 127.0.0.1, shows progress, waits for
the rounds, stops the daemons with SIGTERM and writes a summary (JSON keys are a
contract: other tools read them).
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
from fedswarm.federation.groups.plan import grid_shape
from fedswarm.learning.adapter_vector import flatten_state
from fedswarm.learning.checkpoint_files import latest_dir

from ..errors import DemoError
from .local_federation import LocalFederation

DEMO_TIMEOUT_S = 1800.0


def run_demo(
    *,
    peers: int,
    rounds: int,
    secure: bool,
    mode: str,
    group_size: int,
    workdir: Path | None,
    json_path: Path | None,
) -> dict[str, Any]:
    """Run the demo and return its summary (also written to ``json_path``)."""
    started = time.monotonic()
    own_tmp = workdir is None
    root = Path(tempfile.mkdtemp(prefix="fedswarm-demo-")) if own_tmp else Path(workdir)  # type: ignore[arg-type]
    protocol = "bfv-mask-shamir-v2" if secure else "none"
    overrides: dict[str, dict[str, Any]] = {"federation": {"final_averaging_rounds": (
        final_averaging_rounds(peers, rounds, group_size, mode))}}
    if mode == "fedmkt":  # the demo's models differ: a member asking for secure would abort
        overrides["fedmkt"] = {"homogeneous_exchange": "clear"}
    federation = LocalFederation(
        root, peers, rounds, secure_aggregation=protocol, group_size=group_size, mode=mode,
        overrides=overrides,
    )
    if mode == "fedmkt":  # models differ: knowledge is exchanged, nothing is averaged
        protocol = "none"
    click.echo(f"fedswarm demo: {peers} peers, {rounds} rounds, secure aggregation: {protocol}")
    if mode == "fedmkt":
        click.echo("  NOTE: FedMKT (mutual distillation between different models): each peer's "
                   "top-k predictions on the public set are seen by its group; see docs/fedmkt.md")
    elif protocol == "none":
        click.echo("  WARNING: plaintext averaging; every peer sees the others' updates")
    click.echo(f"  building the tiny demo model and data in {root} ...")
    try:
        federation.prepare()
        federation.start()
        for peer in federation.peers:
            click.echo(f"  {peer.org:<22} {peer.peer_id[:20]}...  status: {peer.api_url}"
                       f"/?token={peer.token}")
        progress = _Progress(rounds)
        statuses = federation.wait_rounds(rounds, DEMO_TIMEOUT_S, on_poll=progress.show)
        progress.finish()
    except KeyboardInterrupt:
        federation.stop()
        raise
    except BaseException:
        federation.stop()
        raise
    codes = federation.stop()
    summary = _summarise(federation, statuses, protocol, time.monotonic() - started)
    summary["exit_codes"] = codes
    _print_table(summary)
    if json_path is not None:
        json_path.write_text(json.dumps(summary, indent=2) + "\n")
        click.echo(f"summary written to {json_path}")
    if own_tmp and summary["ok"]:
        shutil.rmtree(root, ignore_errors=True)
    elif not summary["ok"]:
        click.echo(f"logs kept in {root}")
    return summary


def final_averaging_rounds(peers: int, rounds: int, group_size: int, mode: str) -> int:
    """With rotating groups, end with one averaging-only pass over the grid so every
    peer holds the same adapter; with one group of everyone no extra round is needed."""
    if mode == "fedmkt":
        return 0
    passes = grid_shape(peers, group_size).rounds_per_epoch if peers > group_size + 2 else 0
    return min(passes, rounds - 1)


class _Progress:
    """One line per change of the federation's progress."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.last = ""

    def show(self, statuses: list[dict[str, Any] | None]) -> None:
        cells = []
        for s in statuses:
            if s is None:
                cells.append("starting")
            else:
                cells.append(f"r{s.get('rounds_completed', 0)}/{self.rounds} {s.get('state', '?')}")
        line = "  progress: " + " | ".join(cells)
        if line != self.last:
            click.echo(line)
            self.last = line

    def finish(self) -> None:
        click.echo("  all peers completed their rounds; stopping daemons")


def _summarise(
    federation: LocalFederation,
    statuses: list[dict[str, Any] | None],
    protocol: str,
    wall_s: float,
) -> dict[str, Any]:
    per_peer = []
    vectors = []
    for peer, status in zip(federation.peers, statuses, strict=True):
        status = status or {}
        per_peer.append(
            {
                "peer_id": peer.peer_id,
                "org": peer.org,
                "domain": peer.domain,
                "eval_loss_start": status.get("eval_loss_start"),
                "eval_loss_end": status.get("eval_loss_last"),
                "rounds_completed": status.get("rounds_completed", 0),
                "rounds_aggregated": status.get("rounds_aggregated", 0),
                "last_finished_round": status.get("last_finished_round", 0),
            }
        )
        try:
            vector = read_final_adapter(peer.state_dir / "checkpoint")
            vectors.append(vector)
        except Exception as exc:
            raise DemoError(f"{peer.org}: cannot read its final adapter: {exc}") from exc
    diff: float | None = None  # FedMKT peers run different models: adapters not comparable
    if federation.mode != "fedmkt":
        diff = max((float(np.max(np.abs(a - b))) for a in vectors for b in vectors), default=0.0)
    ok = all(
        p["last_finished_round"] >= federation.rounds
        and p["eval_loss_end"] is not None
        and p["eval_loss_start"] is not None
        and p["eval_loss_end"] < p["eval_loss_start"]
        for p in per_peer
    )
    return {
        "peers": federation.n_peers,
        "rounds": federation.rounds,
        "secure_aggregation": protocol,
        "mode": federation.mode,
        "group_size": federation.group_size,
        "per_peer": per_peer,
        "consensus_max_abs_diff": diff,
        "wall_s": round(wall_s, 2),
        "ok": ok,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }


def read_final_adapter(checkpoint_root: Path) -> np.ndarray:
    """The adapter of a peer's latest checkpoint, flattened (for the consensus check)."""
    from safetensors.torch import load_file

    tensors = load_file(str(latest_dir(checkpoint_root) / "adapter" / "adapter_model.safetensors"))
    vector, _ = flatten_state(tensors)
    return vector


def _print_table(summary: dict[str, Any]) -> None:
    click.echo("")
    click.echo(f"{'organisation':<24} {'rounds':>6} {'eval loss start':>16} {'eval loss end':>14}")
    for p in summary["per_peer"]:
        start = p["eval_loss_start"]
        end = p["eval_loss_end"]
        click.echo(
            f"{p['org']:<24} {p['rounds_completed']:>6} "
            f"{start if start is None else f'{start:.4f}':>16} "
            f"{end if end is None else f'{end:.4f}':>14}"
        )
    click.echo(f"secure aggregation:      {summary['secure_aggregation']}")
    if summary["consensus_max_abs_diff"] is not None:
        click.echo(f"consensus max abs diff:  {summary['consensus_max_abs_diff']:.3g}")
    click.echo(f"wall time:               {summary['wall_s']:.1f} s")
    click.echo("result:                  " + ("OK" if summary["ok"] else "FAILED"))
