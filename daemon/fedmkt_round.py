"""One FedMKT round inside a formed group: exchange public-set knowledge, then distil.

Members may run different models with different tokenizers, so there is nothing to
average. Instead each member runs its model over the agreed public set, sends the
top-k predictions (with its tokenizer card: vocabulary + word-boundary style, so the
receiver can map vocabularies) to every other member as a blob of kind ``fedmkt``,
and distils from what the others sent. A blob that does not decode or validate is
reported through ``on_reject`` and left out; the round goes on with the rest.

Torch work (the knowledge pass, vocabulary mapping, DTW alignment and distillation)
runs in a worker thread so the event loop keeps serving the network. Sends run as
background tasks, so one unreachable member never delays the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from fedswarm.learning.fedmkt import (
    DistillStats,
    KnowledgeError,
    KnowledgeShapeError,
    PublicDataset,
    PublicKnowledge,
    VocabMappingCache,
    compute_public_knowledge,
    distill,
)

from .errors import RoundAbortedError
from .fedmkt_config import FedMKTSection
from .mailbox import Mailbox

log = logging.getLogger("fedswarm.daemon.fedmkt")

KIND = "fedmkt"
#: A peer's example may be at most this many times our own ``max_length``: DTW costs
#: O(L_own x L_peer) in Python, so an oversized example would stall our round.
MAX_LENGTH_FACTOR = 2
#: A peer's top-k may be at most this many times our own (bounds memory of the targets).
MAX_TOP_K_FACTOR = 4

SendBlob = Callable[[str, str, int, bytes], Awaitable[None]]


@dataclass
class FedMKTOutcome:
    """What one FedMKT exchange did, for the round log and the dashboard."""

    teachers: list[str]  # members whose knowledge was accepted and distilled from
    rejected: dict[str, str]  # member -> why its knowledge was refused
    missing: list[str]  # members that sent nothing before the deadline
    bytes_sent: int
    bytes_received: int
    public_losses: dict[str, float]  # member (self included) -> mean CE on the public set
    distill: DistillStats
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def survivors(self) -> list[str]:
        """Members that took part: the teachers (whose knowledge was used)."""
        return list(self.teachers)


def mean_public_loss(knowledge: PublicKnowledge) -> float:
    """Example-averaged cross-entropy of a model on the public set (from its knowledge)."""
    values = [e.mean_ce for e in knowledge.examples if len(e.input_ids) > 1]
    return float(sum(values) / len(values)) if values else float("nan")


def accept_knowledge(
    blob: bytes, public: PublicDataset, section: FedMKTSection
) -> PublicKnowledge:
    """Decode and validate one member's blob; raises a ``KnowledgeError`` subclass.

    Beyond ``PublicKnowledge.validate`` (public-set hash, example count, shapes, finite
    values, ids inside the sender's vocabulary) this bounds the cost a peer can make us
    pay: example lengths and top-k must stay near our own settings.
    """
    knowledge = PublicKnowledge.decode(blob)
    knowledge.validate(expected_public_sha256=public.sha256, expected_examples=len(public))
    longest = max((len(e.input_ids) for e in knowledge.examples), default=0)
    if longest > MAX_LENGTH_FACTOR * section.max_length:
        raise KnowledgeShapeError(
            f"an example has {longest} tokens, over {MAX_LENGTH_FACTOR}x our max_length "
            f"{section.max_length} (do all members use the same [fedmkt] max_length?)"
        )
    if knowledge.top_k > MAX_TOP_K_FACTOR * section.top_k:
        raise KnowledgeShapeError(
            f"top-k {knowledge.top_k} is over {MAX_TOP_K_FACTOR}x our top_k {section.top_k}"
        )
    return knowledge


async def run_fedmkt_exchange(
    *,
    me: str,
    group: Sequence[str],
    round: int,
    model: torch.nn.Module,
    tokenizer: Any,
    public: PublicDataset,
    section: FedMKTSection,
    send_blob: SendBlob,
    mailbox: Mailbox,
    deadline: float,
    on_reject: Callable[[str, str], None],
    mapping_cache: VocabMappingCache | None = None,
    seed: int = 0,
) -> FedMKTOutcome:
    """Exchange knowledge with ``group`` and distil ``model`` from what was accepted.

    ``deadline`` is a ``time.monotonic()`` value: members whose knowledge has not
    arrived by then are left out. Raises ``RoundAbortedError`` when no member's
    knowledge was accepted (the model is then left as local training made it).
    """
    started = time.monotonic()
    settings = section.settings()
    own = await asyncio.to_thread(
        compute_public_knowledge,
        model,
        tokenizer,
        public.texts,
        public.sha256,
        top_k=settings.top_k,
        max_length=settings.max_length,
        batch_size=settings.knowledge_batch_size,
    )
    payload = await asyncio.to_thread(own.encode)
    knowledge_s = time.monotonic() - started

    others = [p for p in group if p != me]
    sends = [
        asyncio.create_task(_send(send_blob, peer, round, payload, deadline)) for peer in others
    ]
    exchange_started = time.monotonic()
    accepted: dict[str, PublicKnowledge] = {}
    rejected: dict[str, str] = {}
    bytes_received = 0
    try:
        async for letter in mailbox.collect(KIND, round, others, deadline, on_reject):
            sender = letter.sender
            bytes_received += len(letter.payload)
            try:
                accepted[sender] = await asyncio.to_thread(
                    accept_knowledge, letter.payload, public, section
                )
            except KnowledgeError as exc:
                rejected[sender] = str(exc)
                on_reject(sender, f"FedMKT knowledge refused: {exc}")
        sent = await asyncio.gather(*sends)
    finally:
        for task in sends:
            task.cancel()
    exchange_s = time.monotonic() - exchange_started
    missing = sorted(set(others) - set(accepted) - set(rejected))
    if not accepted:
        raise RoundAbortedError(
            f"no FedMKT knowledge accepted from any of {len(others)} group members "
            f"({len(rejected)} refused, {len(missing)} missing)"
        )

    teachers = sorted(accepted)
    distill_started = time.monotonic()
    stats = await asyncio.to_thread(
        distill,
        model,
        tokenizer,
        own,
        [accepted[p] for p in teachers],
        settings,
        section.distill_steps,
        batch_size=section.distill_batch_size,
        learning_rate=section.distill_lr,
        mapping_cache=mapping_cache,
        seed=seed,
    )
    distill_s = time.monotonic() - distill_started
    public_losses = {me: mean_public_loss(own)}
    public_losses.update({p: mean_public_loss(accepted[p]) for p in teachers})
    log.info(
        "round %d: FedMKT distilled from %d member(s) (%s); %.0f%% of positions aligned to a "
        "peer; distill loss %.4f -> %.4f",
        round, len(teachers), ", ".join(p[-8:] for p in teachers),
        100 * stats.peer_position_fraction, stats.first_loss, stats.last_loss,
    )
    return FedMKTOutcome(
        teachers=teachers,
        rejected=rejected,
        missing=missing,
        bytes_sent=sum(sent),
        bytes_received=bytes_received,
        public_losses=public_losses,
        distill=stats,
        timings={
            "knowledge_s": knowledge_s,
            "exchange_s": exchange_s,
            "distill_s": distill_s,
            "aggregate_s": time.monotonic() - started,
        },
    )


def fedmkt_record(me: str, outcome: FedMKTOutcome) -> dict[str, Any]:
    """Round-log fields of a FedMKT round (``StateStore.update_round`` columns).

    ``survivors`` lists the members whose knowledge was used, ourselves included (as
    in adapter averaging); ``dropped`` those refused or silent; ``note`` says who
    taught whom, since the round log has no column for it.
    """
    refused = "; ".join(f"{p[-8:]}: {why}" for p, why in sorted(outcome.rejected.items()))
    note = f"fedmkt: {me[-8:]} learnt from {', '.join(p[-8:] for p in outcome.teachers)}"
    note += f" ({100 * outcome.distill.peer_position_fraction:.0f}% positions aligned)"
    if refused:
        note += f"; refused {refused}"
    if outcome.missing:
        note += f"; nothing from {', '.join(p[-8:] for p in outcome.missing)}"
    return {
        "survivors": sorted([me, *outcome.teachers]),
        "dropped": sorted([*outcome.rejected, *outcome.missing]),
        "protocol": "fedmkt",
        "bytes_sent": outcome.bytes_sent,
        "bytes_received": outcome.bytes_received,
        "aggregate_s": outcome.timings.get("aggregate_s"),
        "note": note,
    }


def fedmkt_event(me: str, round: int, outcome: FedMKTOutcome) -> dict[str, Any]:
    """The dashboard's ``fedmkt`` event: teacher -> student edges and public-set losses."""
    return {
        "round": round,
        "student": me,
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


async def _send(
    send_blob: SendBlob, recipient: str, round: int, payload: bytes, deadline: float
) -> int:
    """Send one blob; returns the bytes delivered (0 when it failed or timed out)."""
    try:
        await asyncio.wait_for(
            send_blob(recipient, KIND, round, payload),
            timeout=max(deadline - time.monotonic(), 1.0),
        )
        return len(payload)
    except Exception as exc:
        log.warning(
            "round %d: FedMKT knowledge to %s not delivered: %s", round, recipient[-8:], exc
        )
        return 0
