"""One FedMKT round inside a formed group: exchange public-set knowledge, then distil.

Members first swap cards (``cards``) to learn whether they all share one
tokenizer and support. If they do and all ask for it, the group runs the **secure
exchange**: each member projects its public-set predictions onto the agreed support
(``learning.fedmkt.support``), the group securely averages those vectors with the same
protocol adapter averaging uses, and everyone distils from the group average only.

Otherwise (different tokenizers, or ``homogeneous_exchange = "clear"``) the **clear
exchange** runs: each member sends its top-k predictions (with its tokenizer card:
vocabulary + word-boundary style, so the receiver can map vocabularies) to every other
member as a blob of kind ``fedmkt``, and distils from what the others sent. A blob that
does not decode or validate is reported through ``on_reject`` and left out; the round
goes on with the rest.

Torch work (the knowledge pass, vocabulary mapping, DTW alignment and distillation)
runs in a worker thread so the event loop keeps serving the network. Sends run as
background tasks, so one unreachable member never delays the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from fedswarm.learning.fedmkt import (
    DistillStats,
    KnowledgeError,
    KnowledgeShapeError,
    PublicDataset,
    PublicKnowledge,
    PublicSupport,
    SupportAverageError,
    VocabMappingCache,
    build_public_support,
    check_average,
    compute_public_knowledge,
    distill,
    support_vector,
    teacher_knowledge,
)
from fedswarm.secagg.params import SecAggParams

from ..averaging.bounds import check_group_average
from ..averaging.result import GroupAverage
from ..errors import RoundAbortedError
from ..link import FEDMKT_CARD_KIND, FEDMKT_KIND, send_before
from ..round import MIN_GROUP_SIZE, RoundContext
from .cards import Card, KnowledgeExchange, clear_reason, collect_cards, decide_exchange
from .settings import FedMKTSection

log = logging.getLogger("fedswarm.federation.fedmkt")

KIND = FEDMKT_KIND
#: A peer's example may be at most this many times our own ``max_length``: DTW costs
#: O(L_own x L_peer) in Python, so an oversized example would stall our round.
MAX_LENGTH_FACTOR = 2
#: A peer's top-k may be at most this many times our own (bounds memory of the targets).
MAX_TOP_K_FACTOR = 4

#: Secure averaging of support vectors: every member weighs 1 and every slot lies in
#: [0, 1], so ``max_weight = 1`` buys a grid ~65 000 times finer than adapter averaging's.
SUPPORT_SECAGG_PARAMS = SecAggParams(max_weight=1.0, clip_norm=1.0, clip_mode="coordinate")


class SecureAverage(Protocol):
    """A secure group average for this round (``SecureAggregation.average`` bound to it)."""

    def __call__(
        self, *, vector: np.ndarray, weight: float, params: SecAggParams
    ) -> Awaitable[GroupAverage]: ...


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
    exchange: KnowledgeExchange = "clear"
    clear_why: str | None = None  # clear: why the group could not use the secure exchange
    clear_knowledge_bytes: int = 0  # top-k knowledge bytes sent in the clear (0 when secure)
    group_public_loss: float | None = None  # secure: the group's average CE on the public set
    aggregator: str | None = None  # secure: secagg roles, as for adapter averaging
    decryptor: str | None = None

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


@dataclass(frozen=True)
class FedMKTLearner:
    """This member's side of FedMKT: its model and tokenizer, the public set, the settings."""

    model: torch.nn.Module
    tokenizer: Any
    public: PublicDataset
    section: FedMKTSection
    mapping_cache: VocabMappingCache | None = None
    seed: int = 0
    #: Token ids of this member's own training examples, replayed in distillation
    #: batches (``[fedmkt] replay_fraction``); empty: no replay.
    replay_ids: Sequence[Sequence[int]] = ()


async def run_fedmkt_exchange(
    ctx: RoundContext,
    learner: FedMKTLearner,
    secure_average: SecureAverage | None = None,
) -> FedMKTOutcome:
    """Exchange knowledge with the group and distil ``learner.model`` from what was accepted.

    Members whose knowledge has not arrived by ``ctx.deadline`` are left out.
    ``secure_average`` is ``None`` when the federation runs without secure aggregation
    (then only the clear exchange exists). Raises ``RoundAbortedError`` when nothing
    usable arrived (the model is then left as local training made it).
    """
    started = time.monotonic()
    section = learner.section
    support = await asyncio.to_thread(
        build_public_support, learner.tokenizer, learner.public, section.max_length,
        section.support_size,
    )
    asked: KnowledgeExchange = (
        section.homogeneous_exchange if secure_average is not None else "clear"
    )
    card = Card(fingerprint=support.fingerprint, exchange=asked)
    card_sends = [
        asyncio.create_task(send_before(
            ctx.link, peer, FEDMKT_CARD_KIND, ctx.round, card.encode(), ctx.deadline
        ))
        for peer in ctx.others
    ]
    try:
        own = await asyncio.to_thread(_own_knowledge, learner)
        knowledge_s = time.monotonic() - started
        # Cards go out before the knowledge pass, so a third of the time left is plenty
        # for live members; a dead member must not eat the exchange's whole deadline.
        card_deadline = time.monotonic() + (ctx.deadline - time.monotonic()) / 3
        cards, card_bytes_received = await collect_cards(
            ctx.mailbox, ctx.round, ctx.others, card_deadline, ctx.rejecter(FEDMKT_CARD_KIND)
        )
        card_bytes = sum(await asyncio.gather(*card_sends))
    finally:
        for task in card_sends:
            task.cancel()
    exchange = decide_exchange(ctx.me, card, cards)
    log.info("round %d: FedMKT %s exchange (%d of %d cards)", ctx.round, exchange, len(cards),
             len(ctx.others))
    r = _Round(ctx, learner, own, started, knowledge_s, card_bytes, card_bytes_received)
    if exchange == "secure":
        assert secure_average is not None  # we only ask for "secure" with it
        return await _secure_exchange(r, support, secure_average)
    outcome = await _clear_exchange(r)
    outcome.clear_why = clear_reason(card, cards)
    return outcome


def _own_knowledge(learner: FedMKTLearner) -> PublicKnowledge:
    """Our model's top-k predictions on the public set (blocking: run in a thread)."""
    settings = learner.section.settings()
    return compute_public_knowledge(
        learner.model,
        learner.tokenizer,
        learner.public.texts,
        learner.public.sha256,
        top_k=settings.top_k,
        max_length=settings.max_length,
        batch_size=settings.knowledge_batch_size,
    )


@dataclass(frozen=True)
class _Round:
    """What both exchanges need from ``run_fedmkt_exchange``."""

    ctx: RoundContext
    learner: FedMKTLearner
    own: PublicKnowledge
    started: float
    knowledge_s: float
    card_bytes: int
    card_bytes_received: int

    async def distil_from(self, teachers: list[PublicKnowledge]) -> tuple[DistillStats, float]:
        began = time.monotonic()
        learner, section = self.learner, self.learner.section
        stats = await asyncio.to_thread(
            distill,
            learner.model,
            learner.tokenizer,
            self.own,
            teachers,
            section.settings(),
            section.distill_steps,
            batch_size=section.distill_batch_size,
            learning_rate=section.distill_lr,
            mapping_cache=learner.mapping_cache,
            seed=learner.seed,
            replay_ids=learner.replay_ids,
        )
        return stats, time.monotonic() - began

    def timings(self, exchange_s: float, distill_s: float) -> dict[str, float]:
        """The round's phase timings, as both exchanges report them."""
        return {
            "knowledge_s": self.knowledge_s,
            "exchange_s": exchange_s,
            "distill_s": distill_s,
            "aggregate_s": time.monotonic() - self.started,
        }


async def _secure_exchange(
    r: _Round, support: PublicSupport, secure_average: SecureAverage
) -> FedMKTOutcome:
    """Average support vectors securely and distil from the group's average only."""
    ctx = r.ctx
    vector = await asyncio.to_thread(
        support_vector, r.learner.model, support, r.learner.section.knowledge_batch_size
    )
    exchange_started = time.monotonic()
    averaged = await secure_average(vector=vector, weight=1.0, params=SUPPORT_SECAGG_PARAMS)
    exchange_s = time.monotonic() - exchange_started
    if len(averaged.survivors) < MIN_GROUP_SIZE:
        raise RoundAbortedError(
            f"secure FedMKT average over {len(averaged.survivors)} members; "
            f"{MIN_GROUP_SIZE} are needed so no member's vector can be recovered"
        )
    # Out-of-range values or a total weight no honest group gives are refused here, whatever
    # ``secure_average`` is; every member weighs exactly 1, so the total is the survivors.
    params = SUPPORT_SECAGG_PARAMS
    check_group_average(averaged, 1.0, params, weight_tolerance=params.weight_resolution)
    if abs(averaged.total_weight - len(averaged.survivors)) > params.weight_resolution / 2:
        raise RoundAbortedError(
            f"secure FedMKT average refused: total weight {averaged.total_weight:.6g}, but "
            f"{len(averaged.survivors)} survivors weighing 1 each sum to "
            f"{len(averaged.survivors)}"
        )
    # the protocol's quantisation bound, plus float32 rounding of the average it hands back
    tolerance = averaged.error_bound + float(np.finfo(np.float32).eps)
    try:
        average = check_average(averaged.average, support, tolerance)
    except SupportAverageError as exc:
        raise RoundAbortedError(f"secure FedMKT average refused: {exc}") from exc
    teacher = teacher_knowledge(average, support)
    stats, distill_s = await r.distil_from([teacher])
    teachers = sorted(set(averaged.survivors) - {ctx.me})
    log.info(
        "round %d: FedMKT distilled from the secure average of %d member(s); "
        "distill loss %.4f -> %.4f",
        ctx.round, len(averaged.survivors), stats.first_loss, stats.last_loss,
    )
    return FedMKTOutcome(
        teachers=teachers,
        rejected={},
        missing=sorted(set(ctx.others) - set(averaged.survivors)),  # silent or dropped
        bytes_sent=r.card_bytes + averaged.bytes_sent,
        bytes_received=r.card_bytes_received + averaged.bytes_received,
        public_losses={ctx.me: mean_public_loss(r.own)},
        distill=stats,
        timings=r.timings(exchange_s, distill_s),
        exchange="secure",
        group_public_loss=float(np.mean(average.mean_ce)) if average.mean_ce.size else None,
        aggregator=averaged.aggregator,
        decryptor=averaged.decryptor,
    )


async def _clear_exchange(r: _Round) -> FedMKTOutcome:
    """Send our top-k to every member, accept theirs, distil from the accepted ones."""
    ctx = r.ctx
    on_reject = ctx.rejecter(KIND)
    payload = await asyncio.to_thread(r.own.encode)
    sends = [
        asyncio.create_task(send_before(ctx.link, peer, KIND, ctx.round, payload, ctx.deadline))
        for peer in ctx.others
    ]
    exchange_started = time.monotonic()
    accepted: dict[str, PublicKnowledge] = {}
    rejected: dict[str, str] = {}
    bytes_received = r.card_bytes_received
    try:
        async for letter in ctx.mailbox.collect(
            KIND, ctx.round, ctx.others, ctx.deadline, on_reject
        ):
            sender = letter.sender
            bytes_received += len(letter.payload)
            try:
                accepted[sender] = await asyncio.to_thread(
                    accept_knowledge, letter.payload, r.learner.public, r.learner.section
                )
            except KnowledgeError as exc:
                rejected[sender] = str(exc)
                on_reject(sender, f"FedMKT knowledge refused: {exc}")
        sent = await asyncio.gather(*sends)
    finally:
        for task in sends:
            task.cancel()
    exchange_s = time.monotonic() - exchange_started
    missing = sorted(set(ctx.others) - set(accepted) - set(rejected))
    if not accepted:
        raise RoundAbortedError(
            f"no FedMKT knowledge accepted from any of {len(ctx.others)} group members "
            f"({len(rejected)} refused, {len(missing)} missing)"
        )

    teachers = sorted(accepted)
    stats, distill_s = await r.distil_from([accepted[p] for p in teachers])
    public_losses = {ctx.me: mean_public_loss(r.own)}
    public_losses.update({p: mean_public_loss(accepted[p]) for p in teachers})
    log.info(
        "round %d: FedMKT distilled from %d member(s) (%s); %.0f%% of positions aligned to a "
        "peer; distill loss %.4f -> %.4f",
        ctx.round, len(teachers), ", ".join(p[-8:] for p in teachers),
        100 * stats.peer_position_fraction, stats.first_loss, stats.last_loss,
    )
    return FedMKTOutcome(
        teachers=teachers,
        rejected=rejected,
        missing=missing,
        bytes_sent=r.card_bytes + sum(sent),
        bytes_received=bytes_received,
        public_losses=public_losses,
        distill=stats,
        timings=r.timings(exchange_s, distill_s),
        exchange="clear",
        clear_knowledge_bytes=sum(sent),
    )
