"""Federated arms of the full benchmark: real ``fedswarm run`` daemons on 127.0.0.1.

Each arm is one ``LocalFederation`` (its own processes, libp2p, SQLite, checkpoints),
configured with the same rounds, local steps, lr, batch, seeds and data as the
in-process arms. When it is done, every peer's final adapter is read from its
checkpoint and evaluated with the benchmark's ``Evaluator``; bytes and aggregation
time come from each daemon's own round log. The federation is always stopped, even
when the arm fails or is interrupted.
"""

from __future__ import annotations

import re
import statistics
import tomllib
from dataclasses import asdict
from pathlib import Path

import tomli_w
import torch
from fedswarm.daemon.demo.local_federation import LocalFederation, PeerProcess
from fedswarm.daemon.errors import DemoError
from fedswarm.daemon.state import RoundRecord, StateStore
from fedswarm.learning.checkpoint_files import latest_dir
from fedswarm.learning.errors import CheckpointError
from fedswarm.learning.trainer import ADAPTER_FILE
from fedswarm.secagg.params import PROTOCOL_NAME
from safetensors.torch import load_file

from .quality_report import ArmResult
from .quality_setup import BenchData, Evaluator, QualityBenchError, RunSettings

ROUND_DEADLINE_S = 300.0


def adapter_from_checkpoint(checkpoint_root: Path,
                            template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A peer's latest checkpointed adapter, keyed like ``LocalTrainer.adapter_state()``.

    PEFT saves tensors without the adapter name (``lora_A.weight``), the live model
    names them ``lora_A.default.weight``; every live name must be found, or it is an
    error rather than a silently partial adapter.
    """
    try:
        path = latest_dir(checkpoint_root) / "adapter" / ADAPTER_FILE
        saved = load_file(str(path))
    except (CheckpointError, OSError, ValueError) as exc:
        raise QualityBenchError(f"{checkpoint_root}: no readable adapter: {exc}") from exc
    state = {}
    for name in template:
        key = name.replace(".default.", ".")
        if key not in saved:
            raise QualityBenchError(f"{checkpoint_root}: adapter lacks {key}")
        state[name] = saved[key].to(torch.float32)
    return state


def _use_data(federation: LocalFederation, data: BenchData) -> None:
    """Point each daemon at the benchmark's shard (matters only for ``--data``)."""
    for peer, shard in zip(federation.peers, data.peers, strict=True):
        document = tomllib.loads(peer.config_path.read_text())
        document["data"]["train_path"] = str(shard.train_path)
        document["data"]["eval_path"] = str(shard.eval_path)
        document["data"].pop("eval_fraction", None)
        peer.config_path.write_text(tomli_w.dumps(document))
        peer.domain = shard.domain


def _round_log(peer: PeerProcess) -> list[RoundRecord]:
    store = StateStore.open(peer.state_dir)
    try:
        return [r for r in store.rounds() if r.round >= 1]
    finally:
        store.close()


_HE_READY = re.compile(r"HE worker \d+ ready after ([0-9.]+) s")


def he_worker_start_s(peer: PeerProcess) -> float | None:
    """Seconds the daemon's HE worker took to start (paid at start-up, before round 1).

    Read from the daemon's log line, so the table can show what the wall time of the
    rounds no longer contains; ``None`` when the daemon started no worker.
    """
    try:
        found = _HE_READY.search(peer.log_path.read_text(errors="replace"))
    except OSError:
        return None
    return float(found.group(1)) if found else None


def run_daemon_arm(name: str, workdir: Path, model_dir: Path, settings: RunSettings,
                   data: BenchData, evaluator: Evaluator, template: dict[str, torch.Tensor],
                   *, secure: bool, group_size: int, timeout_s: float) -> ArmResult:
    """Run one federated arm with real daemons and evaluate every peer's final adapter."""
    protocol = PROTOCOL_NAME if secure else "none"
    federation = LocalFederation(
        workdir / name, len(data.peers), settings.rounds, secure_aggregation=protocol,
        group_size=group_size, local_steps=settings.local_steps,
        batch_size=settings.batch_size, max_length=settings.max_length, lr=settings.lr,
        seed=settings.seed, model_dir=model_dir, round_deadline_s=ROUND_DEADLINE_S,
        overrides={"train": {"fedprox_mu": settings.fedprox_mu, **settings.train_schedule()},
                   "federation": {"average_optimizer_state": settings.average_optimizer_state,
                                  "freeze_lora_a": settings.freeze_lora_a,
                                  "group_momentum": settings.group_momentum,
                                  "scaffold": settings.scaffold},
                   **({"data": {"alignment": asdict(data.public)}} if data.public else {})},
    )
    try:
        federation.prepare()
        _use_data(federation, data)
        federation.start()
        federation.wait_rounds(settings.rounds, timeout_s)
    except DemoError as exc:
        raise QualityBenchError(f"{name}: federation failed: {exc}") from exc
    finally:
        federation.stop()
    logs = [_round_log(peer) for peer in federation.peers]
    incomplete = [p.org for p, log in zip(federation.peers, logs, strict=True)
                  if sum(r.status == "complete" for r in log) < settings.rounds]
    started = min(r.started_at for log in logs for r in log)
    finished = max(r.finished_at or r.started_at for log in logs for r in log)
    losses = [evaluator.evaluate(adapter_from_checkpoint(p.state_dir / "checkpoint", template))
              for p in federation.peers]
    records = [r for log in logs for r in log]
    starts = [t for t in map(he_worker_start_s, federation.peers) if t is not None]
    return ArmResult(
        name, "daemons", losses, finished - started,
        aggregation_s=statistics.fmean(
            sum(r.aggregate_s or 0.0 for r in log) for log in logs),
        bytes_per_peer_round=statistics.fmean(r.bytes_sent or 0 for r in records),
        group_size=group_size, protocol=protocol,
        note=("rounds not all aggregated: " + ", ".join(incomplete)) if incomplete else
        "wall_s: first round start to last round end; aggregation_s: mean per peer",
        extra={"train_s_per_peer": statistics.fmean(
            sum(r.train_s or 0.0 for r in log) for log in logs),
            **({"he_worker_start_s_per_peer": statistics.fmean(starts)} if starts else {})},
    )
