"""The daemon as the dashboard sees it: ``webui.DaemonView`` answered from memory and SQLite."""

from __future__ import annotations

import asyncio
import hashlib
import platform
import time
from importlib import metadata
from typing import TYPE_CHECKING, Any

from fedswarm.learning.errors import TamperedPackageError
from fedswarm.p2p.identity import public_key_from_peer_id
from fedswarm.secagg.params import SecAggParams, params_for_protocol

from .fedkseed import EVENT as FEDKSEED_EVENT
from .fedkseed import fedkseed_panel
from .fedmkt import FedMKTEventLog, fedmkt_panel
from .offsite import EVENT as OFFSITE_EVENT
from .offsite import PackageFacts, offsite_panel
from .prometheus import MetricsSnapshot, render_metrics

if TYPE_CHECKING:
    from ..service import Daemon


def refusal_kind(reason: str) -> str:
    """What a node-level refusal reason refused: a connection, a heartbeat, gossip, ..."""
    if reason in ("not_member", "security_refused", "handshake_failed", "muxer_refused",
                  "inbound_cap"):
        return "connection"
    for prefix in ("heartbeat", "gossip", "dht"):
        if reason.startswith(prefix):
            return prefix
    return "blob/message"


def fedswarm_version() -> str:
    try:
        return metadata.version("fedswarm")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def device_description() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            names = {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
            return f"{torch.cuda.device_count()}x GPU ({', '.join(sorted(names))})"
    except Exception:
        pass
    return f"CPU ({platform.machine()})"


def key_fingerprint(peer_id: str) -> str:
    """sha256 of the member's Ed25519 public key (embedded in its peer id), shortened."""
    try:
        return hashlib.sha256(public_key_from_peer_id(peer_id)).hexdigest()[:16]
    except Exception:
        return "invalid peer id"


#: What reads raw training or eval rows outside DP-SGD (docs/privacy.md), for the dashboard.
NOT_COVERED_BY_DP = [
    "eval set: eval loss and the validation gate read it in the clear",
    "generation samples: eval prompts and greedy completions shown on the dashboard",
    "row counts: the averaging weight is this member's number of training rows",
]


class DaemonStatusView:
    """Read-only view of a running ``Daemon`` for ``fedswarm.webui``."""

    def __init__(self, daemon: Daemon) -> None:
        self._d = daemon
        self._device = device_description()
        self._fedmkt_events = FedMKTEventLog()
        self._package_facts: PackageFacts | None = None
        if daemon.config.federation.mode == "fedmkt":  # public-set losses live only in events
            for recorded in daemon.store.events_of_kind("fedmkt") if daemon.store else []:
                self._fedmkt_events.record({"type": "fedmkt", **recorded})
            self._fedmkt_events.follow(daemon.events.subscribe, daemon.events.unsubscribe)

    def overview(self) -> dict[str, Any]:
        d = self._d
        counts = d.store.round_status_counts() if d.store else {}
        return {
            "org": d.config.node.org,
            "federation_id": d.roster.federation_id,
            "peer_id": d.identity.peer_id,
            "round": d.current_round,
            "state": d.state,
            "uptime_s": time.time() - d.started_at,
            "version": fedswarm_version(),
            "device": self._device,
            "mode": d.config.federation.mode,
            "secure_aggregation": self.protocol_name(),
            "rounds_target": d.config.federation.rounds,
            "rounds_completed": (counts.get("complete", 0) + counts.get("local_only", 0)
                                 + counts.get("refused", 0)),
            "rounds_aggregated": counts.get("complete", 0),
            # group results the validation gate rolled back ([federation] max_eval_loss_increase)
            "rounds_refused": counts.get("refused", 0),
            "rounds_caught_up": counts.get("caught_up", 0),
            "last_finished_round": d.store.last_finished_round() if d.store else 0,
            "peers_up": self._peers_up(),
            "eval_loss_start": d.eval_loss_start,
            "eval_loss_last": d.eval_loss_last,
            "adapter_fingerprint": d.adapter_fingerprint,
            "listen_addrs": d.node.listen_addrs if d.node else [],
            "api_url": d.api_url,
            "privacy": self.privacy(),
            "group_privacy": self.group_privacy(),
            "screen": self.screen(),
        }

    def screen(self) -> dict[str, Any]:
        """[data.screen]: rows this start checked and dropped, by screen; the report's size."""
        summary = getattr(self._d, "screen", None)
        return summary.as_dict() if summary is not None else {"enabled": False}

    def privacy(self) -> dict[str, Any]:
        """The DP budget: spent, target, left, and what the guarantee does not cover."""
        trainer = getattr(self._d, "trainer", None)
        budget = getattr(trainer, "privacy", None)
        if budget is None:
            return {"enabled": False}
        plan, spent = budget.plan, budget.epsilon()
        runner = getattr(self._d, "runner", None)
        return {
            "enabled": True,
            "epsilon_spent": spent,
            "epsilon_target": plan.target_epsilon,
            "epsilon_remaining": max(0.0, plan.target_epsilon - spent),
            "delta": plan.delta,
            "steps": budget.steps,
            "noise_multiplier": plan.noise_multiplier,
            "sample_rate": plan.sample_rate,
            "max_grad_norm": plan.max_grad_norm,
            "accountant": "Opacus PRV" if plan.accountant == "prv" else "Opacus RDP",
            "training_stopped": bool(getattr(runner, "privacy_spent", False)),
            "not_covered": NOT_COVERED_BY_DP,
        }

    def group_privacy(self) -> dict[str, Any]:
        """Group-level DP ([privacy] group_noise_multiplier): ε over the rounds released."""
        privacy = getattr(self._d, "group_privacy", None)
        if privacy is None:
            return {"enabled": False}
        budget, noise = privacy.budget, privacy.params.group_noise
        history = budget.history
        return {
            "enabled": True,
            "epsilon_spent": budget.epsilon(),
            "epsilon_target": budget.target_epsilon,
            "epsilon_remaining": budget.remaining(),
            "delta": budget.delta,
            "rounds": budget.rounds,
            "noise_multiplier": noise.noise_multiplier,
            "effective_noise_multiplier": history[-1].noise_multiplier if history else None,
            "update_clip": noise.update_clip,
            "colluders": noise.colluders,
            "survivor_floor": noise.min_survivors,
            "accountant": "Opacus PRV" if budget.accountant == "prv" else "Opacus RDP",
        }

    def _peers_up(self) -> int:
        """Other roster members heard from recently (not counting ourselves)."""
        return max(len(self._d.up_members()) - 1, 0) if self._d.membership else 0

    def protocol_name(self) -> str:
        return self._d.config.federation.secure_aggregation

    def peers(self) -> list[dict[str, Any]]:
        d = self._d
        views = d.membership.view() if d.membership else {}
        timeout = d.membership.down_after() if d.membership else d.config.federation.peer_timeout_s
        result = []
        for member in d.roster.members:
            entry: dict[str, Any] = {
                "org": member.org,
                "peer_id": member.peer_id,
                "addrs": list(member.addrs),
                "is_self": member.peer_id == d.identity.peer_id,
                "up": member.peer_id == d.identity.peer_id,
                "last_seen": None,
                "latency_ms": None,
                "round": None,
                "state": None,
                "fingerprint": None,
                "version": None,
            }
            if entry["is_self"]:
                entry.update(
                    round=d.current_round, state=d.state, fingerprint=d.adapter_fingerprint,
                    last_seen=time.time(), version=fedswarm_version(),
                    addrs=d.node.listen_addrs if d.node else [],
                )
            seen = views.get(member.peer_id)
            if seen is not None and not entry["is_self"]:
                entry.update(
                    addrs=list(seen.addrs) or entry["addrs"],
                    last_seen=seen.last_seen,
                    latency_ms=seen.latency_ms,
                    round=seen.round,
                    state=seen.state,
                    fingerprint=seen.fingerprint,
                    version=seen.version,
                    up=time.time() - seen.last_seen <= timeout,
                )
            result.append(entry)
        return result

    def rounds(self, limit: int = 200) -> list[dict[str, Any]]:
        if self._d.store is None:
            return []
        return [r.as_dict() for r in self._d.store.rounds(limit) if r.round > 0]

    def training(self) -> dict[str, Any]:
        store = self._d.store
        if store is None:
            return {"steps": [], "rounds": [], "samples": [], "eval_loss_start": None}
        return {
            "steps": store.step_metrics(),
            "rounds": [
                {
                    "round": r.round,
                    "train_loss": r.train_loss,
                    "eval_loss_before": r.eval_loss_before,
                    "eval_loss_after": r.eval_loss_after,
                    "status": r.status,
                }
                for r in store.rounds()
                if r.round > 0
            ],
            "samples": store.samples(),
            "samples_per_round": self._samples_per_round(),
            "eval_loss_start": self._d.eval_loss_start,
        }

    def _eval_metrics(self) -> dict[str, Any]:
        """``[eval]``'s latest scored round for /metrics: its number and (set, measure, value)."""
        if not self._d.config.eval.enabled or self._d.store is None:
            return {}
        latest = self._d.store.latest_round_eval()
        scores = [(e["name"], measure, float(e[measure])) for e in latest
                  for measure in ("loss", "exact_match", "rouge_l", "refusal_rate")
                  if e[measure] is not None]
        return {"eval_round": latest[0]["round"] if latest else 0, "eval_scores": scores}

    def evaluation(self) -> dict[str, Any]:
        """``[eval]``: the configured sets and every round's scores (from the database)."""
        settings = self._d.config.eval
        store = self._d.store
        enabled = settings.enabled
        return {
            "enabled": enabled,
            "every_rounds": settings.every_rounds if enabled else None,
            "max_rows": settings.max_rows if enabled else None,
            "results": store.round_evals() if store is not None else [],
        }

    def _samples_per_round(self) -> int | None:
        train = getattr(self._d.config, "train", None)
        return getattr(train, "samples_per_round", None)

    def security(self) -> dict[str, Any]:
        d = self._d
        protocol = self._d.config.federation.secure_aggregation
        params = params_for_protocol(protocol) if protocol != "none" else SecAggParams()
        return {
            "federation_id": d.roster.federation_id,
            "roster_fingerprint": d.roster.fingerprint(),
            "roster": [
                {
                    "org": m.org,
                    "peer_id": m.peer_id,
                    "key_fingerprint": key_fingerprint(m.peer_id),
                }
                for m in d.roster.members
            ],
            "transport": "TCP + Noise XX + Yamux (plaintext and secio refused)",
            "secure_aggregation": {
                "protocol": self.protocol_name(),
                "enabled": self.protocol_name() != "none",
                "scheme": "BFV (TenSEAL) + pairwise ChaCha20 masks + self-masks + Shamir",
                "poly_modulus_degree": params.poly_modulus_degree,
                "coeff_mod_bit_sizes": list(params.coeff_mod_bit_sizes),
                "plain_modulus_bits": params.plain_modulus_bits,
                "security_bits": params.security_bits(),
                "threshold_rule": "t = floor(k/2) + 1",
            },
            "rejected": self._rejected_rows(),
            "rejected_counts": self._rejected_counts(),
        }

    def _rejected_counts(self) -> dict[str, int]:
        """Every refusal by reason: the daemon's (stored, kept across restarts) and the
        node's (connections, heartbeats, gossip, blobs; since this start)."""
        d = self._d
        counts: dict[str, int] = dict(d.store.rejection_counts()) if d.store else {}
        node_counts = d.node.stats().get("rejected", {}) if d.node else {}
        for reason, n in node_counts.items():
            counts[str(reason)] = counts.get(str(reason), 0) + int(n)
        return counts

    def _rejected_rows(self, limit: int = 200) -> list[dict[str, Any]]:
        """The latest refusals of both layers, newest first, in one shape."""
        d = self._d
        rows = list(d.store.rejections(limit)) if d.store else []
        for r in d.node.recent_rejections() if d.node else []:
            reason = str(r["reason"])
            detail = str(r.get("detail") or "")
            rows.append({
                "ts": r["ts"],
                "peer_id": r.get("peer_id"),
                "kind": refusal_kind(reason),
                "reason": f"{reason}: {detail}" if detail else reason,
            })
        rows.sort(key=lambda row: float(row.get("ts") or 0.0), reverse=True)
        return rows[:limit]

    def traffic(self) -> dict[str, Any]:
        d = self._d
        stats = d.node.stats() if d.node else {}
        per_round = [
            {"round": r.round, "bytes_sent": r.bytes_sent, "bytes_received": r.bytes_received}
            for r in (d.store.rounds() if d.store else [])
            if r.round > 0
        ]
        return {**stats, "per_round": per_round}

    def metrics_text(self) -> str:
        d = self._d
        recent = d.store.rounds(limit=20) if d.store else []
        counts = d.store.round_status_counts() if d.store else {}
        secagg_rounds, secagg_seconds = (
            d.store.secure_aggregation_totals(self.protocol_name()) if d.store else (0, 0.0)
        )
        stats = d.node.stats() if d.node else {}
        privacy = self.privacy()
        screen = self.screen()
        last_train = next((r.train_loss for r in reversed(recent) if r.train_loss is not None),
                          None)
        return render_metrics(
            MetricsSnapshot(
                round=d.current_round,
                rounds_completed=counts.get("complete", 0),
                rounds_aborted=counts.get("aborted", 0),
                train_loss=last_train,
                eval_loss=d.eval_loss_last,
                bytes_sent=int(stats.get("bytes_sent", 0)),
                bytes_received=int(stats.get("bytes_received", 0)),
                peers_up=self._peers_up(),
                rejected_messages=self._rejected_counts(),
                secagg_seconds_total=secagg_seconds,
                secagg_rounds_total=secagg_rounds,
                privacy_epsilon_spent=privacy.get("epsilon_spent"),
                privacy_epsilon_target=privacy.get("epsilon_target"),
                group_privacy_epsilon_spent=self.group_privacy().get("epsilon_spent"),
                screen_rows_checked=screen.get("rows_checked") if screen["enabled"] else None,
                screen_rows_dropped=screen.get("dropped_by_screen", {}),
                **self._eval_metrics(),
                state=d.state,
                up_since=d.started_at,
            )
        )

    def fedmkt(self) -> dict[str, Any]:
        d = self._d
        return fedmkt_panel(
            enabled=d.config.federation.mode == "fedmkt",
            me=d.identity.peer_id,
            records=d.store.rounds() if d.store else [],
            events=self._fedmkt_events,
            org_of=lambda peer: d.roster.org_of(peer),
        )

    def fedkseed(self) -> dict[str, Any]:
        d = self._d
        enabled = d.config.federation.mode == "fedkseed"
        store = d.store if enabled else None
        return fedkseed_panel(
            enabled=enabled,
            records=store.rounds(limit=500) if store else [],
            events=store.events_of_kind(FEDKSEED_EVENT) if store else [],
        )

    def offsite(self) -> dict[str, Any]:
        d = self._d
        start = d.offsite
        enabled = d.config.federation.mode == "offsite" and start is not None
        store = d.store if enabled else None
        facts = self._package_facts
        package = start.package if start is not None else None
        if package is not None and (facts is None or facts.package_id != package.package_id):
            try:
                facts = self._package_facts = PackageFacts.read(package)  # once per package
            except (OSError, TamperedPackageError):
                facts = None  # moved away under a running daemon: the rest still answers
        return offsite_panel(
            enabled=enabled,
            is_owner=bool(start and start.is_owner),
            owner=start.owner if start else None,
            owner_org=d.roster.org_of(start.owner) if start else None,
            package_id=start.settings.package_id if start else None,
            package=facts if package is not None else None,
            fetch=(start.fetch_state, start.fetched_bytes, start.package_bytes) if start else None,
            records=store.rounds(limit=500) if store else [],
            events=store.events_of_kind(OFFSITE_EVENT) if store and start and start.is_owner
            else [],
            export_dir=start.role.export_dir if start else None,
        )

    def recent_events(self, limit: int = 50) -> list[dict[str, Any]]:
        return self._d.events.recent(limit)

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        return self._d.events.subscribe()

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._d.events.unsubscribe(queue)
