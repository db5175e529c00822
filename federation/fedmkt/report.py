"""How a FedMKT round is reported: its round-log fields and its dashboard event."""

from __future__ import annotations

from typing import Any

from .exchange import FedMKTOutcome


def fedmkt_record(me: str, outcome: FedMKTOutcome) -> dict[str, Any]:
    """Round-log fields of a FedMKT round (``StateStore.update_round`` columns).

    ``survivors`` lists the members whose knowledge was used, ourselves included (as
    in adapter averaging); ``dropped`` those refused or silent; ``note`` says who
    taught whom, since the round log has no column for it.
    """
    refused = "; ".join(f"{p[-8:]}: {why}" for p, why in sorted(outcome.rejected.items()))
    note = f"fedmkt {outcome.exchange} exchange: {me[-8:]} learnt from "
    if outcome.exchange == "secure":
        note += f"the secure average of {', '.join(p[-8:] for p in outcome.teachers)}"
    else:
        note += ", ".join(p[-8:] for p in outcome.teachers)
    note += f" ({100 * outcome.distill.peer_position_fraction:.0f}% positions aligned)"
    if outcome.clear_why:
        note += f"; clear because {outcome.clear_why}"
    if refused:
        note += f"; refused {refused}"
    if outcome.missing:
        note += f"; nothing from {', '.join(p[-8:] for p in outcome.missing)}"
    record: dict[str, Any] = {
        "survivors": sorted([me, *outcome.teachers]),
        "dropped": sorted([*outcome.rejected, *outcome.missing]),
        "protocol": "fedmkt",
        "bytes_sent": outcome.bytes_sent,
        "bytes_received": outcome.bytes_received,
        "aggregate_s": outcome.timings.get("aggregate_s"),
        "note": note,
    }
    if outcome.aggregator is not None:
        record.update(aggregator=outcome.aggregator, decryptor=outcome.decryptor)
    return record


def fedmkt_event(me: str, round: int, outcome: FedMKTOutcome) -> dict[str, Any]:
    """The dashboard's ``fedmkt`` event: teacher -> student edges and public-set losses."""
    return {
        "round": round,
        "student": me,
        "exchange": outcome.exchange,
        "clear_knowledge_bytes": outcome.clear_knowledge_bytes,
        "group_public_loss": outcome.group_public_loss,
        "teachers": list(outcome.teachers),
        "edges": [{"teacher": t, "student": me} for t in outcome.teachers],
        "rejected": dict(outcome.rejected),
        "missing": list(outcome.missing),
        "public_losses": dict(outcome.public_losses),
        "distill": {
            "steps": outcome.distill.steps,
            "first_loss": outcome.distill.first_loss,
            "last_loss": outcome.distill.last_loss,
            "mean_lm_loss": outcome.distill.mean_lm_loss,
            "mean_distill_loss": outcome.distill.mean_distill_loss,
            "peer_position_fraction": outcome.distill.peer_position_fraction,
        },
        "bytes_sent": outcome.bytes_sent,
        "bytes_received": outcome.bytes_received,
        "timings": dict(outcome.timings),
    }
