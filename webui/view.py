"""The narrow, read-only interface through which the dashboard sees a daemon.

The web layer never imports the daemon: the daemon hands ``create_app`` an object
with these methods. Every method returns plain JSON-ready data and must be cheap
(it runs on the event loop), so the daemon answers from memory or from small
SQLite queries.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol


class DaemonView(Protocol):
    """What the dashboard and the JSON API may read from a running daemon."""

    def overview(self) -> dict[str, Any]:
        """org, federation_id, peer_id, round, state, uptime_s, version, device,
        secure_aggregation, mode, rounds_target, rounds_completed, peers_up, eval_loss_start,
        eval_loss_last, adapter_fingerprint, listen_addrs."""

    def peers(self) -> list[dict[str, Any]]:
        """One entry per roster member: org, peer_id, addrs, last_seen, latency_ms, round, state,
        fingerprint, version, up (bool), is_self (bool)."""

    def rounds(self, limit: int = 200) -> list[dict[str, Any]]:
        """The round log (oldest first): round, status, group members, aggregator, decryptor,
        survivors, dropped, bytes_sent, bytes_received, train_s, aggregate_s, apply_s,
        train_loss, eval_loss_before, eval_loss_after, protocol, staleness, note."""

    def training(self) -> dict[str, Any]:
        """{"steps": [{round, step, loss, ts}], "rounds": [{round, train_loss, eval_loss_before,
        eval_loss_after}], "samples": [{round, prompt, output}], "eval_loss_start": float|None}"""

    def evaluation(self) -> dict[str, Any]:
        """{"enabled": bool ([eval] configured), "every_rounds", "max_rows", "results":
        [{round, ts, name, path, kind: "set"|"refusal", format, rows, loss, perplexity,
        exact_match, rouge_l, refusal_rate}]} oldest round first."""

    def security(self) -> dict[str, Any]:
        """{"federation_id", "roster": [{org, peer_id, key_fingerprint}], "roster_fingerprint",
        "secure_aggregation": {"protocol", "poly_modulus_degree", "coeff_mod_bit_sizes",
        "plain_modulus_bits", "security_bits", "threshold_rule", ...}, "transport": "...",
        "rejected": [{ts, peer_id, kind, reason}], "rejected_counts": {kind: n}}"""

    def traffic(self) -> dict[str, Any]:
        """{"bytes_sent", "bytes_received", "blobs_sent", "blobs_received", "per_round": [...]}"""

    def fedmkt(self) -> dict[str, Any]:
        """{"enabled": bool (mode is fedmkt), "peer_id", "org", "rounds": [{round, status,
        student, student_org, edges: [{teacher, teacher_org, student, student_org}],
        aligned_fraction, public_losses: [{peer_id, org, loss}], dropped, distill, note}]}"""

    def fedkseed(self) -> dict[str, Any]:
        """{"enabled": bool (mode is fedkseed), "k", "rounds": [{round, status, bytes_sent,
        bytes_received, train_loss, eval_loss_after, group, seeds_used, clipped, replay_s,
        parameters_fingerprint}]}"""

    def offsite(self) -> dict[str, Any]:
        """{"enabled": bool (mode is offsite), "role": "model_owner"|"member", "owner",
        "owner_org", "package_id", "package": {bytes, files, layers_total, layers_in_package,
        adapter_layers: {bottom, top}, middle_layers, middle_kept, kept_middle, never_sent,
        distill_steps}|None, "reveals": str|None, "fetch": {state, bytes_fetched,
        bytes_total}|None (member), "owner_state": {rounds_plugged_in, last_plugged_in_round,
        last_plugged_in_at, export_dir, export_written_at}|None (owner), "rounds": [{round,
        status, eval_loss_before, eval_loss_after, train_loss, bytes_sent, bytes_received,
        survivors, plugged_in, confirmed_by}]}"""

    def metrics_text(self) -> str:
        """Prometheus text exposition of the daemon's counters and gauges."""

    def recent_events(self, limit: int = 50) -> list[dict[str, Any]]:
        """The last ``limit`` events ({"type", "ts", ...}) oldest first, as the live stream
        sent them (per-step ``train_step`` events left out): the page's history on load."""

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        """A queue that receives every live event ({"type": ..., ...}) from now on."""

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        """Stop delivering events to ``queue``."""
