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
from typing import TYPE_CHECKING, Any

import click
from fedswarm.secagg.params import PROTOCOL_NAME

from ..errors import DemoError
from ..wording import plural
from .progress import RoundProgress, Ticker

if TYPE_CHECKING:
    import numpy as np

    from .local_federation import LocalFederation

DEMO_TIMEOUT_S = 1800.0
#: FedKSeed's steps per round in the demo: a zeroth-order step is two forward passes
#: and moves the loss far less than a LoRA step (docs/fedkseed.md).
FEDKSEED_DEMO_STEPS = 100
#: ``--dp``: record-level DP-SGD that fits the demo shard (400 rows, an expected batch
#: of ``DEMO_DP_BATCH`` = 32, so q = 0.08; 3 rounds of 15 steps spend ε ≈ 1.88 at
#: δ = 1/400, docs/privacy.md). The noise is fixed rather than derived: the demo's config
#: sets no total_steps. Noise per coordinate is σ·clip / batch while σ for a budget grows
#: slowly with the batch: at the trainer's batch of 8 and clip 1 it drowned the signal
#: (the demo's loss rose).
DEMO_DP = {"enabled": True, "target_epsilon": 3.0, "noise_multiplier": 1.2,
           "max_grad_norm": 0.5}
DEMO_DP_BATCH = 32


def run_demo(
    *,
    peers: int,
    rounds: int,
    secure: bool,
    mode: str,
    group_size: int,
    workdir: Path | None,
    json_path: Path | None,
    dp: bool = False,
) -> dict[str, Any]:
    """Run the demo and return its summary (also written to ``json_path``).

    ``rounds`` is the number of training rounds. With rotating groups (more peers than
    one group holds) the daemons then run averaging-only rounds on top, so that every
    peer ends with the same adapter: ``final_averaging_rounds`` says how many.
    """
    started = time.monotonic()
    own_tmp = workdir is None
    root = Path(tempfile.mkdtemp(prefix="fedswarm-demo-")) if workdir is None else Path(workdir)
    protocol = PROTOCOL_NAME if secure else "none"
    if mode == "fedmkt":  # models differ: knowledge is exchanged, nothing is averaged
        protocol = "none"
    averaging = final_averaging_rounds(peers, group_size, mode)
    total = rounds + averaging
    click.echo(f"fedswarm demo: {plural(peers, 'peer')}, {plural(rounds, 'training round')}"
               + (f" + {averaging} averaging-only" if averaging else "")
               + f", secure aggregation: {protocol}")
    if averaging:
        click.echo(f"  groups of {group_size} rotate each round; the last {averaging} only "
                   "average, so every peer ends with the same adapter")
    if mode == "fedkseed":
        click.echo("  NOTE: FedKSeed (zeroth-order full-model tuning): each peer sends its "
                   f"K-vector (8 KB) a round, after {FEDKSEED_DEMO_STEPS} two-forward steps; "
                   "see docs/fedkseed.md")
    if mode == "fedmkt":
        click.echo("  NOTE: FedMKT (mutual distillation between different models): each peer's "
                   "top-k predictions on the public set are seen by its group; see docs/fedmkt.md")
    elif protocol == "none":
        click.echo("  WARNING: plaintext averaging; every peer sees the others' updates")
    if dp:
        if mode != "lora_avg":
            raise DemoError("--dp: DP-SGD runs with --mode lora_avg only (docs/privacy.md)")
        click.echo(f"  differential privacy: DP-SGD on every peer (noise multiplier "
                   f"{DEMO_DP['noise_multiplier']:g}, clip {DEMO_DP['max_grad_norm']:g}, "
                   f"budget ε {DEMO_DP['target_epsilon']:g}, unpacked rows)")
    click.echo(f"  files (identities, configs, daemon logs): {root}")
    federation: LocalFederation | None = None
    try:
        with Ticker("  preparing: ", click.echo, first="loading torch and transformers"
                    ) as ticker:
            federation = _build_federation(root, peers, total, secure, mode, group_size,
                                           averaging, ticker, dp)
        federation.start()
        for peer in federation.peers:
            click.echo(f"  {peer.org:<22} {_model_label(federation, peer.index)}"
                       f"status: {peer.api_url}/?token={peer.token}")
        progress = RoundProgress(total, click.echo)
        statuses = federation.wait_rounds(total, DEMO_TIMEOUT_S, on_poll=progress.show)
        progress.finish()
        click.echo("  all peers completed their rounds; stopping daemons")
    except KeyboardInterrupt:
        if federation is not None:
            federation.stop()
        raise DemoInterrupted(root) from None
    except BaseException:
        if federation is not None:
            federation.stop()
        raise
    codes = federation.stop()
    summary = _summarise(federation, statuses, protocol, time.monotonic() - started)
    summary["rounds"] = rounds
    summary["final_averaging_rounds"] = averaging
    summary["exit_codes"] = codes
    _print_table(summary)
    if json_path is not None:
        json_path.write_text(json.dumps(summary, indent=2) + "\n")
        click.echo(f"summary written to {json_path}")
    if own_tmp and summary["ok"]:
        logs = keep_only_logs(root)
        click.echo(f"daemon logs kept in {root} ({', '.join(logs)}); the rest was removed")
    else:
        click.echo(f"files and daemon logs kept in {root}")
    return summary


class DemoInterrupted(KeyboardInterrupt):
    """Ctrl-C during the demo, after every daemon was stopped; ``workdir`` is what is left."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(str(workdir))
        self.workdir = workdir


def _build_federation(root: Path, peers: int, total: int, secure: bool, mode: str,
                      group_size: int, averaging: int, ticker: Ticker,
                      dp: bool = False) -> LocalFederation:
    """Import the heavy parts (torch) and build model, shards and configs, under the ticker."""
    from .local_federation import LocalFederation

    overrides: dict[str, dict[str, Any]] = {"federation": {"final_averaging_rounds": averaging}}
    if dp:  # DP-SGD clips each row's gradient: a packed block would mix rows
        overrides["privacy"] = dict(DEMO_DP)
        overrides["data"] = {"packing": False}
        overrides["train"] = {"batch_size": DEMO_DP_BATCH}
    if mode == "fedmkt":  # the demo's models differ: a member asking for secure would abort
        overrides["fedmkt"] = {"homogeneous_exchange": "clear"}
    protocol = PROTOCOL_NAME if secure else "none"
    # a zeroth-order step is two forward passes and moves little: more of them per round
    steps: dict[str, Any] = {"local_steps": FEDKSEED_DEMO_STEPS} if mode == "fedkseed" else {}
    federation = LocalFederation(
        root, peers, total, secure_aggregation=protocol, group_size=group_size, mode=mode,
        overrides=overrides, **steps,
    )
    ticker.update("the demo model (built once, then reused from its cache)")
    federation.prepare(on_progress=lambda line: ticker.update(f"building the demo model: {line}"))
    return federation


def _model_label(federation: LocalFederation, index: int) -> str:
    """Which demo model a peer runs (FedMKT peers differ), padded for the peer line."""
    if federation.mode != "fedmkt":
        return ""
    width = max(len(federation.model_label(i)) for i in range(federation.n_peers))
    return f"{federation.model_label(index):<{width}} "


def keep_only_logs(root: Path) -> list[str]:
    """Delete the demo's folder except each peer's ``daemon.log``; their relative paths.

    After a successful demo the checkpoints and keys are of no use, but the logs are
    what an operator reads to see what a round did.
    """
    logs = sorted(p.relative_to(root) for p in root.glob("*/daemon.log"))
    for entry in root.iterdir():
        if entry.is_dir() and (entry / "daemon.log").exists():
            for inner in entry.iterdir():
                if inner.name != "daemon.log":
                    _remove(inner)
        else:
            _remove(entry)
    return [str(p) for p in logs]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def final_averaging_rounds(peers: int, group_size: int, mode: str) -> int:
    """With rotating groups, end with one averaging-only pass over the grid so every
    peer holds the same adapter; with one group of everyone no extra round is needed.

    These rounds come on top of the training rounds: taking them out of ``--rounds``
    left a 6-peer, 3-round demo one training round, and its losses fell 1-2 % where
    3 peers' fell 11-14 %.
    """
    if mode == "fedmkt":
        return 0
    from fedswarm.federation.groups.plan import grid_shape

    return grid_shape(peers, group_size).rounds_per_epoch if peers > group_size + 2 else 0


def _summarise(
    federation: LocalFederation,
    statuses: list[dict[str, Any] | None],
    protocol: str,
    wall_s: float,
) -> dict[str, Any]:
    import numpy as np

    per_peer = []
    vectors = []
    for peer, status in zip(federation.peers, statuses, strict=True):
        status = status or {}
        per_peer.append(
            {
                "peer_id": peer.peer_id,
                "org": peer.org,
                "domain": peer.domain,
                "model": federation.model_label(peer.index),
                "eval_loss_start": status.get("eval_loss_start"),
                "eval_loss_end": status.get("eval_loss_last"),
                "rounds_completed": status.get("rounds_completed", 0),
                "rounds_aggregated": status.get("rounds_aggregated", 0),
                "last_finished_round": status.get("last_finished_round", 0),
                "privacy": _privacy_of(status),
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
    # --dp: besides a falling loss, the budget must hold
    dp = "privacy" in federation.overrides
    ok = all(
        p["last_finished_round"] >= federation.rounds
        and p["eval_loss_end"] is not None
        and p["eval_loss_start"] is not None
        and p["eval_loss_end"] < p["eval_loss_start"]
        and (not dp or (p["privacy"] is not None
                        and p["privacy"]["epsilon_spent"] <= p["privacy"]["epsilon_target"]))
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
        "dp": dp,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }


def _privacy_of(status: dict[str, Any]) -> dict[str, Any] | None:
    """ε a peer's DP-SGD spent (its /api/status), None without [privacy]."""
    privacy = status.get("privacy") or {}
    if not privacy.get("enabled"):
        return None
    return {key: privacy.get(key) for key in
            ("epsilon_spent", "epsilon_target", "delta", "steps", "noise_multiplier")}


def privacy_lines(summary: dict[str, Any]) -> list[str]:
    """What each peer's DP-SGD spent, for the end of the demo (empty without --dp)."""
    spent = [(p["org"], p["privacy"]) for p in summary["per_peer"] if p.get("privacy")]
    if not spent:
        return []
    lines = ["differential privacy:    DP-SGD, record level, each peer's own rows (Opacus RDP)"]
    for org, privacy in spent:
        lines.append(f"  {org:<22} ε {privacy['epsilon_spent']:.3f} spent of "
                     f"{privacy['epsilon_target']:g} (δ {privacy['delta']:.3g}, "
                     f"{privacy['steps']} steps)")
    return lines


def read_final_adapter(checkpoint_root: Path) -> np.ndarray:
    """The adapter of a peer's latest checkpoint, flattened (for the consensus check);
    with FedKSeed its K scalars (the whole model, given the base)."""
    import numpy as np
    from fedswarm.learning.adapter_vector import flatten_state
    from fedswarm.learning.checkpoint_files import latest_dir
    from safetensors.torch import load_file

    kseed = latest_dir(checkpoint_root) / "kseed_state.npz"
    if kseed.exists():
        with np.load(kseed) as arrays:
            return np.asarray(arrays["scalars"], dtype=np.float32)
    tensors = load_file(str(latest_dir(checkpoint_root) / "adapter" / "adapter_model.safetensors"))
    vector, _ = flatten_state(tensors)
    return vector


def _print_table(summary: dict[str, Any]) -> None:
    click.echo("")
    fedmkt = summary["mode"] == "fedmkt"
    width = max((len(p["model"]) for p in summary["per_peer"]), default=0)
    model = f" {'model':<{width}}" if fedmkt else ""
    click.echo(f"{'organisation':<24}{model} {'rounds done':>11} {'in a group':>10} "
               f"{'eval loss start':>15} {'end':>7} {'change':>7}")
    for p in summary["per_peer"]:
        start, end = p["eval_loss_start"], p["eval_loss_end"]
        change = f"{(end - start) / start:+.1%}" if start and end is not None else "-"
        model = f" {p['model']:<{width}}" if fedmkt else ""
        click.echo(
            f"{p['org']:<24}{model} {p['rounds_completed']:>11} {p['rounds_aggregated']:>10} "
            f"{'-' if start is None else f'{start:.4f}':>15} "
            f"{'-' if end is None else f'{end:.4f}':>7} {change:>7}"
        )
    combined = "learnt from its group's predictions" if fedmkt else "averaged with others"
    click.echo(f"(eval loss: each peer's held-out rows of its own domain; 'in a group': rounds "
               f"it {combined} rather than alone)")
    for line in rotating_groups_note(summary):
        click.echo(line)
    clear = " (FedMKT's demo exchanges top-k predictions in the clear)" if fedmkt else ""
    click.echo(f"secure aggregation:      {summary['secure_aggregation']}{clear}")
    diff = summary["consensus_max_abs_diff"]
    if diff is not None:
        held = "K-vector" if summary["mode"] == "fedkseed" else "adapter"
        click.echo(f"consensus max abs diff:  {diff:.3g}  ({consensus_note(diff, held)})")
    elif fedmkt:
        click.echo("consensus:               none expected: FedMKT peers keep their own models")
    for line in privacy_lines(summary):
        click.echo(line)
    click.echo(f"wall time:               {summary['wall_s']:.1f} s")
    click.echo("result:                  " + result_line(summary))


def rotating_groups_note(summary: dict[str, Any]) -> list[str]:
    """Why own-domain losses fall less with rotating groups than with one group of 3.

    Each peer holds one domain and is evaluated on it. In one group of three, the
    average is a third that peer's own training; with six peers the final averaging
    rounds spread every adapter over six domains, so each domain's share is a sixth
    and its own loss falls less (on a quiet box 1-2 % when only one of three rounds
    trained; see docs/learning.md). A peer whose group did not form trains alone and
    then averages an adapter that drifted towards its domain, which can even raise
    its own-domain loss.
    """
    if summary["mode"] == "fedmkt" or not summary.get("final_averaging_rounds"):
        return []
    peers = summary["peers"]
    lines = [f"note: the last {summary['final_averaging_rounds']} rounds average every peer's "
             f"adapter over all {peers} domains, so each peer's own-domain loss falls less than "
             f"with one group of 3 (its domain is 1/{peers} of the result, not 1/3)"]
    alone = [p["org"] for p in summary["per_peer"]
             if p["rounds_aggregated"] < p["rounds_completed"]]
    if alone:
        lines.append(f"note: {', '.join(alone)} ran some rounds alone (its group did not form "
                     "before the round deadline, common on a busy machine); see its daemon.log")
    return lines


def result_line(summary: dict[str, Any]) -> str:
    """OK, or which peers failed and how."""
    if summary["ok"] and summary.get("dp"):
        return "OK: every peer finished within its DP budget and its eval loss fell"
    if summary["ok"]:
        return "OK: every peer finished and its eval loss fell"
    problems = []
    for p in summary["per_peer"]:
        start, end = p["eval_loss_start"], p["eval_loss_end"]
        if p["last_finished_round"] < summary["rounds"] + summary.get("final_averaging_rounds", 0):
            problems.append(f"{p['org']} did not finish")
        elif start is None or end is None:
            problems.append(f"{p['org']} reported no eval loss")
        elif summary.get("dp") and not p.get("privacy"):
            problems.append(f"{p['org']} reported no privacy budget")
        elif (summary.get("dp")
              and p["privacy"]["epsilon_spent"] > p["privacy"]["epsilon_target"]):
            problems.append(f"{p['org']} spent more than its DP budget")
        elif end >= start:
            problems.append(f"{p['org']}'s eval loss did not fall")
    return "FAILED: " + "; ".join(problems or ["see the daemons' logs"])


#: Below this the peers' final adapters are the same up to secure aggregation's
#: quantisation (docs/security.md: its error bound is far smaller).
CONSENSUS_TOLERANCE = 1e-3


def consensus_note(diff: float, held: str = "adapter") -> str:
    """What the largest difference between two peers' final ``held`` states means, in words.

    ``held`` is what the mode averages: the adapter, or FedKSeed's K-vector (equal
    K-vectors replay to bit-identical weights).
    """
    if diff == 0:
        return f"every peer holds the same {held}"
    if diff < CONSENSUS_TOLERANCE:
        return f"the same {held}, up to secure aggregation's rounding"
    return (f"peers hold close but different {held}s: the last groups' averages did not "
            "reach one exact federation-wide average (peers on a grid with empty cells)")
