"""The dashboard's FedKSeed panel: per round, the bytes, the losses and the seeds in use.

The round log (SQLite) has the losses and the bytes of every round; the seeds in use,
the scalars clipped when sent, the replay's time and the parameters' fingerprint are in
the ``fedkseed`` event the mode records after applying a group's K-vector (the runner
keeps it in the store, so the panel survives restarts). Rounds without a group (trained
alone, aborted) show the round log's part only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..state import RoundRecord

EVENT = "fedkseed"


def fedkseed_panel(
    *, enabled: bool, records: Iterable[RoundRecord], events: Iterable[dict[str, Any]]
) -> dict[str, Any]:
    """``{"enabled", "k", "rounds": [{round, status, bytes_sent, bytes_received, train_loss,
    eval_loss_after, group, seeds_used, clipped, replay_s, parameters_fingerprint}]}``,
    oldest round first."""
    by_round: dict[int, dict[str, Any]] = {}
    for event in events:
        number = event.get("round")
        if isinstance(number, int):
            by_round[number] = event
    rounds = []
    k = None
    for record in sorted(records, key=lambda r: r.round):
        if record.round == 0:
            continue
        event = by_round.get(record.round, {})
        k = event.get("k", k)
        rounds.append(
            {
                "round": record.round,
                "status": record.status,
                "bytes_sent": record.bytes_sent,
                "bytes_received": record.bytes_received,
                "train_loss": record.train_loss,
                "eval_loss_after": record.eval_loss_after,
                "group": event.get("group"),
                "seeds_used": event.get("seeds_used"),
                "clipped": event.get("clipped"),
                "replay_s": event.get("replay_s"),
                "parameters_fingerprint": event.get("parameters_fingerprint"),
            }
        )
    return {"enabled": enabled, "k": k, "rounds": rounds}
