"""Render the daemon's metrics in the Prometheus text exposition format (0.0.4).

Why hand-written: the daemon already keeps its numbers (SQLite, counters in the
round loop); it only needs to print them on ``GET /metrics``. A snapshot in,
text out, is easy to test and needs no registry or global state. The output is
checked in tests with ``prometheus_client``'s own parser.

Format: https://prometheus.io/docs/instrumenting/exposition_formats/
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import metadata

__all__ = ["CONTENT_TYPE", "MetricsSnapshot", "escape_label_value", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The ``Content-Type`` header to send with ``render_metrics``' output."""


@dataclass(frozen=True, kw_only=True)
class MetricsSnapshot:
    """The numbers one scrape reports, read from the daemon at one moment.

    Counters (``rounds_completed`` ... ``secagg_rounds_total``) only grow while
    the process lives; ``up_since`` is the Unix time the daemon started, so
    Prometheus can see restarts. Losses are None until the first one exists.
    """

    state: str
    up_since: float
    round: int = 0
    rounds_completed: int = 0
    rounds_aborted: int = 0
    train_loss: float | None = None
    eval_loss: float | None = None
    bytes_sent: int = 0
    bytes_received: int = 0
    peers_up: int = 0
    rejected_messages: dict[str, int] = field(default_factory=dict)
    secagg_seconds_total: float = 0.0
    secagg_rounds_total: int = 0
    # With [privacy] enabled: the DP budget's ε spent so far and its target (None: off).
    privacy_epsilon_spent: float | None = None
    privacy_epsilon_target: float | None = None
    # With group-level DP: ε its group releases have spent so far (None: off).
    group_privacy_epsilon_spent: float | None = None
    # With [data.screen]: rows the loader screened at start, and those dropped, by screen.
    screen_rows_checked: int | None = None
    screen_rows_dropped: dict[str, int] = field(default_factory=dict)
    # With [eval]: the latest scored round's numbers, as (set, measure, value); measure is
    # loss, exact_match, rouge_l or refusal_rate. None: [eval] is off.
    eval_round: int | None = None
    eval_scores: list[tuple[str, str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in (
            "round",
            "rounds_completed",
            "rounds_aborted",
            "bytes_sent",
            "bytes_received",
            "peers_up",
            "secagg_seconds_total",
            "secagg_rounds_total",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ValueError(f"{name}: expected a number, got {value!r}")
            if not value >= 0:  # also refuses NaN
                raise ValueError(f"{name}: must be >= 0, got {value!r}")
        for name in ("train_loss", "eval_loss", "up_since"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int | float) or isinstance(value, bool)
            ):
                raise ValueError(f"{name}: expected a number, got {value!r}")
        for reason, count in self.rejected_messages.items():
            if not isinstance(reason, str):
                raise ValueError(f"rejected_messages: reason must be text, got {reason!r}")
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ValueError(
                    f"rejected_messages[{reason!r}]: expected a count >= 0, got {count!r}"
                )


def render_metrics(snapshot: MetricsSnapshot) -> str:
    """The whole ``/metrics`` page for ``snapshot``; every family has HELP and TYPE lines."""
    out = _Writer()
    out.family(
        "fedswarm_build_info",
        "gauge",
        "Always 1; the label carries the running fedswarm version.",
        [({"version": _version()}, 1)],
    )
    out.family(
        "fedswarm_state",
        "gauge",
        "Always 1; the label names the round state machine's current state.",
        [({"state": snapshot.state}, 1)],
    )
    out.gauge("fedswarm_round", "Current (or last started) round number.", snapshot.round)
    out.counter(
        "fedswarm_rounds_completed_total",
        "Rounds whose group average was applied.",
        snapshot.rounds_completed,
    )
    out.counter(
        "fedswarm_rounds_aborted_total",
        "Rounds that could not aggregate (too few peers, deadline passed).",
        snapshot.rounds_aborted,
    )
    if snapshot.train_loss is not None:
        out.gauge("fedswarm_train_loss", "Last local training loss.", snapshot.train_loss)
    if snapshot.eval_loss is not None:
        out.gauge("fedswarm_eval_loss", "Last evaluation loss.", snapshot.eval_loss)
    out.counter(
        "fedswarm_bytes_sent_total",
        "Bytes sent to peers (blobs, messages and gossip).",
        snapshot.bytes_sent,
    )
    out.counter(
        "fedswarm_bytes_received_total",
        "Bytes received from peers (blobs, messages and gossip).",
        snapshot.bytes_received,
    )
    out.gauge("fedswarm_peers_up", "Roster peers currently reachable.", snapshot.peers_up)
    out.family(
        "fedswarm_rejected_messages_total",
        "counter",
        "Messages refused, by reason (bad signature, unknown peer, replay, ...).",
        [
            ({"reason": reason}, count)
            for reason, count in sorted(snapshot.rejected_messages.items())
        ],
    )
    out.counter(
        "fedswarm_secagg_seconds_total",
        "Wall-clock seconds spent in secure aggregation.",
        snapshot.secagg_seconds_total,
    )
    out.counter(
        "fedswarm_secagg_rounds_total",
        "Secure-aggregation runs timed in fedswarm_secagg_seconds_total.",
        snapshot.secagg_rounds_total,
    )
    if snapshot.privacy_epsilon_spent is not None and snapshot.privacy_epsilon_target is not None:
        spent, target = snapshot.privacy_epsilon_spent, snapshot.privacy_epsilon_target
        out.gauge("fedswarm_privacy_epsilon_spent",
                  "Differential privacy: epsilon spent by DP-SGD so far (Opacus RDP accountant).",
                  spent)
        out.gauge("fedswarm_privacy_epsilon_target",
                  "Differential privacy: the epsilon budget ([privacy] target_epsilon).", target)
        out.gauge("fedswarm_privacy_epsilon_remaining",
                  "Differential privacy: epsilon left before local training stops.",
                  max(0.0, target - spent))
    if snapshot.group_privacy_epsilon_spent is not None:
        out.gauge("fedswarm_group_privacy_epsilon_spent",
                  "Group-level differential privacy: epsilon spent by the rounds this "
                  "member's clipped change entered a group sum.",
                  snapshot.group_privacy_epsilon_spent)
    if snapshot.screen_rows_checked is not None:
        out.gauge("fedswarm_screen_rows_checked",
                  "Data screen: training rows screened when the data was loaded.",
                  snapshot.screen_rows_checked)
        out.family("fedswarm_screen_rows_dropped", "gauge",
                   "Data screen: rows dropped at load, by screen (see quarantine.jsonl).",
                   [({"screen": name}, count)
                    for name, count in sorted(snapshot.screen_rows_dropped.items())])
    if snapshot.eval_round is not None:
        out.gauge("fedswarm_eval_set_round",
                  "[eval]: the round whose scores fedswarm_eval_set_score reports (0: none yet).",
                  snapshot.eval_round)
        out.family("fedswarm_eval_set_score", "gauge",
                   "[eval]: the latest scored round's loss, exact_match, rouge_l or "
                   "refusal_rate, by set (docs/safety.md).",
                   [({"set": name, "measure": measure}, value)
                    for name, measure, value in snapshot.eval_scores])
    out.gauge(
        "fedswarm_start_time_seconds",
        "Unix time the daemon started.",
        snapshot.up_since,
    )
    return out.text()


def escape_label_value(value: str) -> str:
    r"""Escape ``\``, ``"`` and newline, the three characters the format reserves in labels."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _format_value(value: float) -> str:
    """Integers as integers, floats in shortest round-trip form, Inf/NaN as Go spells them."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Writer:
    """Collects lines; one ``family`` call writes one metric family."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def gauge(self, name: str, help_text: str, value: float) -> None:
        self.family(name, "gauge", help_text, [({}, value)])

    def counter(self, name: str, help_text: str, value: float) -> None:
        self.family(name, "counter", help_text, [({}, value)])

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: list[tuple[dict[str, str], float]],
    ) -> None:
        self._lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if labels:
                rendered = ",".join(
                    f'{key}="{escape_label_value(val)}"' for key, val in labels.items()
                )
                self._lines.append(f"{name}{{{rendered}}} {_format_value(value)}")
            else:
                self._lines.append(f"{name} {_format_value(value)}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _version() -> str:
    try:
        return metadata.version("fedswarm")
    except metadata.PackageNotFoundError:
        return "unknown"
