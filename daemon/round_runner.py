"""The round loop, read top to bottom: catch up, train, group, combine, apply, record.

``RoundRunner`` is the one place that knows the order of a round; what a round trains
and how a group combines belong to the federation mode's ``Exchange``
(``fedswarm.federation.modes``), and how a group forms to ``federation.groups``. The
daemon (``service.py``) builds a runner once its parts are started and reads its
``progress`` for heartbeats and the dashboard.

One round:

1. ``_train``: the mode's local training (skipped in the final averaging rounds and
   right after a catch-up), then an evaluation;
2. ``_form_group``: plan and agree on this round's group (``federation.groups``);
3. ``_combine``: the mode's ``combine`` with the group; an abort leaves the local model;
4. ``_finish``: apply the group's result, evaluate, checkpoint, record.

A round is recorded ``complete`` only after its checkpoint is on disk, so a crash at any
point resumes at the last complete round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from fedswarm.federation.catch_up import (
    AdapterExchange,
    AdoptAdapter,
    SkipAhead,
    catch_up_plan,
    check_pulled,
    quorum_for,
)
from fedswarm.federation.errors import RoundAbortedError
from fedswarm.federation.exchange import Combined, Exchange
from fedswarm.federation.groups.agreement import AgreementConfig, Formed
from fedswarm.federation.groups.formation import form_group
from fedswarm.federation.groups.plan import epoch_of
from fedswarm.federation.link import Link
from fedswarm.federation.mailbox import Mailbox
from fedswarm.federation.round import Phase, RoundContext
from fedswarm.federation.staleness import staleness
from fedswarm.learning.checkpoint_files import has_checkpoint
from fedswarm.learning.errors import CheckpointError, LearningError, PrivacyBudgetSpentError
from fedswarm.learning.evaluation.per_round import RoundEvalSets
from fedswarm.learning.trainer import EvalReport, RollbackPoint
from fedswarm.p2p.framing import MAX_ROUND
from fedswarm.p2p.membership import PeerView

from .config import Config
from .errors import StateError
from .events import EventBus
from .state import StateStore
from .wording import plural

log = logging.getLogger("fedswarm.daemon.rounds")

CATCH_UP_TIMEOUT_S = 30.0
CHECKPOINT_DIR = "checkpoint"  # under the state folder


class TrainingInterrupted(Exception):
    """Raised from the training callback to stop local training at shutdown."""


#: What still ends the round loop: shutdown, and this member's own disk or checkpoint
#: failures (nothing a peer sends can raise these).
_FATAL = (TrainingInterrupted, StateError, CheckpointError)


@dataclass
class Progress:
    """Where this member stands: what heartbeats, the API and the dashboard report."""

    round: int = 0
    eval_loss_start: float | None = None
    eval_loss_last: float | None = None
    adapter_fingerprint: str = ""
    mass: float = 0.0  # push-sum averaging weight carried between groups
    mass_epoch: int = -1
    last_aggregated_round: int | None = None
    # the adapter of the last complete round: what we hand to peers catching up
    published: tuple[int, np.ndarray, float] | None = field(default=None, repr=False)

    @property
    def published_round(self) -> int:
        """The round ``adapter_fingerprint`` belongs to, for heartbeats; -1 if none yet."""
        return -1 if self.published is None else self.published[0]


class RoundTrainer(Protocol):
    """What a round asks of the local model: ``LocalTrainer``, and for ``mode = "offsite"``
    ``OffsiteTrainer`` (a member) or ``OwnerTrainer`` (the model owner)."""

    @property
    def num_train_samples(self) -> int: ...
    @property
    def adapter_size(self) -> int: ...
    def evaluate(self) -> EvalReport: ...
    def adapter_fingerprint(self) -> str: ...
    def fingerprint_of(self, vector: np.ndarray) -> str: ...
    def adapter_snapshot(self) -> tuple[np.ndarray, str]: ...
    def load_adapter_vector(self, vector: np.ndarray) -> None: ...
    def rollback_point(self) -> RollbackPoint: ...
    def roll_back(self, point: RollbackPoint) -> None: ...
    def sample_outputs(self, n: int, max_new_tokens: int) -> list[tuple[str, str]]: ...
    def save_checkpoint(self, directory: Path, round: int) -> None: ...
    def load_checkpoint(self, directory: Path) -> int: ...


AWAIT_HEARTBEATS = 3
"""A planned member heard from within this many heartbeat intervals is waited for."""


@dataclass(frozen=True)
class HeartbeatAwaited:
    """Whether a planned member still works towards ``round``: its latest heartbeat is
    at most ``fresh_s`` old and names this round or an earlier one.

    While that holds no stand-in replaces it (docs/aggregation.md, rule 5): a leader
    that is only slow (its training took longer) is waited for as before, and only one
    that crashed, left, or is already past this round is replaced. A leader replaced
    while live would lose its group and, in a federation of one group, keep losing it:
    both halves wait out their windows, so the skew between them persists.
    """

    view: Callable[[], dict[str, PeerView]]
    round: int
    fresh_s: float
    earlier_only: bool = False
    """Only a member still finishing the *previous* round counts (``behind`` in
    ``GroupAgreement``: windows stretch for it, ``AgreementConfig.late_wait``). One further
    behind (a restart) skips ahead by catching up rather than joining this round."""

    def __call__(self, peer: str) -> bool:
        seen = self.view().get(peer)
        if seen is None or time.time() - seen.last_seen > self.fresh_s:
            return False
        return seen.round == self.round - 1 if self.earlier_only else seen.round <= self.round


_PAST_GROUPING = frozenset({Phase.AGGREGATING, Phase.APPLYING, Phase.CHECKPOINTING, Phase.DONE,
                            Phase.STOPPING, Phase.STOPPED})


@dataclass(frozen=True)
class HeartbeatPast:
    """Whether a member has left ``round``'s grouping: its latest heartbeat names a later
    round, or this one in a phase that comes after grouping (``GroupAgreement``'s
    ``past``).

    No freshness bound: a member's round and phases only move forward, so an old
    heartbeat that says so is still true, unless the member restarted since (then its
    next heartbeat says otherwise, and at worst this member goes alone one round).
    """

    view: Callable[[], dict[str, PeerView]]
    round: int
    later_round_only: bool = False
    """Only a later round counts (``GroupAgreement``'s ``moved_on``): a leader aggregating
    this round has sent its final, which may still be on its way."""

    def __call__(self, peer: str) -> bool:
        seen = self.view().get(peer)
        if seen is None:
            return False
        if self.later_round_only:
            return seen.round > self.round
        return seen.round > self.round or (seen.round == self.round
                                           and seen.state in _PAST_GROUPING)


@dataclass(frozen=True)
class HeartbeatLeft:
    """Whether a wait in ``round``'s exchange may stop expecting a member: its latest
    heartbeat names a later round (it moved on), or none arrived within the membership's
    down time (it crashed or was cut off). Either way it sends nothing more for this
    round, so secure aggregation stops waiting ``MOVED_ON_GRACE_S`` after instead of at
    its step deadline, and a view that changes its mind (the member is heard again)
    starts that grace over. Issue #27: a killed decryptor cost its group its step waits
    (up to three, 120 s each) where one that had moved on cost 10 s."""

    view: Callable[[], dict[str, PeerView]]
    round: int

    def __call__(self, peer: str) -> bool:
        seen = self.view().get(peer)
        if seen is None:
            return False
        return seen.round > self.round or not seen.up


@dataclass
class MemberServices:
    """The daemon's parts a round uses; each is started before the runner is built."""

    me: str
    config: Config
    trainer: RoundTrainer
    store: StateStore
    events: EventBus
    mailbox: Mailbox
    link: Link
    exchange: Exchange
    adapters: AdapterExchange
    view: Callable[[], dict[str, PeerView]]  # the membership view, from heartbeats
    # seconds between a member's heartbeats now ([federation] heartbeat_s, stretched for
    # a large roster: p2p.membership.Membership.pace)
    heartbeat_interval: Callable[[], float]
    is_member: Callable[[str], bool]
    up_members: Callable[[], list[str]]  # roster members up now, ourselves included
    # roster members group plans count (up, or heard within a few down times: a late
    # heartbeat must not reshuffle everyone's plan), ourselves included
    planning_members: Callable[[], list[str]]
    set_phase: Callable[[Phase], None]
    reject: Callable[[str | None, str, str], None]  # (peer, kind, why)
    stopping: asyncio.Event
    # [eval]: the sets scored after a round and kept for the training page; None: off
    round_eval: RoundEvalSets | None = None


class ApplyParts:
    """Where a round's "apply" time goes, part by part, for the round log.

    The apply step is everything after the group's result arrives: ``apply`` (load the
    result, or roll it back), ``eval`` (the evaluation after applying; none when
    nothing was applied: the evaluation after training stands), ``samples`` (the
    dashboard's greedy completions), ``checkpoint`` (written and synced) and
    ``publish`` (the adapter snapshot peers catching up are handed). Operators saw
    5.9-14.8 s of "apply" and could not tell which it was (docs/operations.md).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def timing(self, part: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[part] = self.seconds.get(part, 0.0) + time.monotonic() - started

    def rounded(self) -> dict[str, float]:
        return {part: round(s, 3) for part, s in self.seconds.items()}

    def describe(self) -> str:
        return ", ".join(f"{part} {s:.1f}" for part, s in self.seconds.items()) or "nothing"


class RoundRunner:
    """Runs rounds until the target is reached or the daemon stops."""

    def __init__(self, services: MemberServices) -> None:
        self.s = services
        self.progress = Progress()
        self._just_caught_up = False
        # Set once the DP budget has no room for a step: no more local training, but the
        # daemon still serves and averages (averaging spends nothing: docs/privacy.md).
        self.privacy_spent = False

    @property
    def checkpoint_dir(self) -> Path:
        return self.s.config.state_dir / CHECKPOINT_DIR

    # -- start ----------------------------------------------------------------------------

    def restore(self) -> int:
        """Load the last checkpoint, or evaluate the fresh model as round 0 (blocking)."""
        s, p = self.s, self.progress
        if not has_checkpoint(self.checkpoint_dir):
            report = s.trainer.evaluate()
            p.eval_loss_start = p.eval_loss_last = report.loss
            s.store.begin_round(0)
            s.store.update_round(0, status="initial", eval_loss_after=report.loss,
                                 finished_at=time.time(), note="evaluation before any training")
            p.adapter_fingerprint = s.trainer.adapter_fingerprint()
            return 0  # nothing to hand to peers catching up until a round completes
        round_done = s.trainer.load_checkpoint(self.checkpoint_dir)
        self._publish_adapter(round_done)
        if s.store.mark_recovered(round_done):
            log.warning("round %d was checkpointed just before a crash; recorded as recovered",
                        round_done)
        log.info("resumed from checkpoint of round %d", round_done)
        initial = s.store.round_record(0)
        if initial is not None:
            p.eval_loss_start = initial.eval_loss_after
        last = [r for r in s.store.rounds(limit=20) if r.eval_loss_after is not None]
        if last:
            p.eval_loss_last = last[-1].eval_loss_after
        p.round = round_done
        return round_done

    # -- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Rounds until ``[federation] rounds`` is reached or the daemon stops."""
        fed, s = self.s.config.federation, self.s
        await self._wait_for_peers()
        while not s.stopping.is_set():
            next_round = self.progress.round + 1
            if fed.rounds and next_round > fed.rounds:
                break
            try:
                if await self._catch_up():
                    continue
                await self.run_round(next_round)
            except TrainingInterrupted:
                return
        if not s.stopping.is_set():
            s.set_phase(Phase.DONE)
            if fed.after_rounds == "exit":
                log.info("%s done; exiting ([federation] after_rounds = \"exit\")",
                         plural(fed.rounds, "round"))
            else:
                log.info("%s done; serving peers and the API until stopped "
                         "([federation] after_rounds = \"serve\"; \"exit\" exits instead)",
                         plural(fed.rounds, "round"))

    async def _wait_for_peers(self) -> None:
        fed, s = self.s.config.federation, self.s
        if fed.wait_for_peers <= 1:
            return
        s.set_phase(Phase.WAITING_FOR_PEERS)
        deadline = time.monotonic() + fed.wait_for_peers_s
        while time.monotonic() < deadline and not s.stopping.is_set():
            if len(s.up_members()) >= fed.wait_for_peers:
                return
            await asyncio.sleep(0.2)
        log.warning("only %d of %d peers up after %.0f s; starting anyway",
                    len(s.up_members()), fed.wait_for_peers, fed.wait_for_peers_s)

    # -- one round ------------------------------------------------------------------------

    async def run_round(self, round: int) -> None:
        s = self.s
        self.progress.round = round
        s.mailbox.advance(round)
        s.store.begin_round(round)
        s.events.publish("round_started", round=round)
        train_loss, eval_before = await self._train(round)
        formed = await self._form_group(round)
        members = formed if isinstance(formed, str) else tuple(formed.members)
        combined, status, note = None, "local_only", None
        point: RollbackPoint | None = None
        if isinstance(members, str):
            note = f"no group this round: {members}"
        else:
            # the validation gate's way back, taken before FedMKT distils in place
            point = (None if s.config.federation.max_eval_loss_increase is None
                     else await asyncio.to_thread(s.trainer.rollback_point))
            assert isinstance(formed, Formed)
            combined, status, note = await self._combine(round, members, formed.min_members)
        apply_started = time.monotonic()
        parts = ApplyParts()
        eval_after: float | None = None
        if combined is not None:
            combined, status, note, eval_after = await self._apply(
                round, combined, eval_before, point, parts)
        elif isinstance(members, str) or s.config.federation.mode == "lora_avg":
            # Nothing was applied (no group, or lora_avg's combine, which only computes
            # an average, was aborted): the model is the one just evaluated after
            # training, so a second full evaluation would measure the same thing.
            eval_after = eval_before
        eval_after = await self._checkpoint(round, eval_after, parts)
        # the model changed this round: trained, or a group result was applied and kept
        await self._score_sets(round, train_loss is not None or combined is not None, parts)
        record: dict[str, Any] = {
            "status": status,
            "note": note,
            "apply_s": time.monotonic() - apply_started,
            "apply_parts": parts.rounded(),
            "staleness": staleness(round, self.progress.last_aggregated_round),
        }
        if not isinstance(members, str):
            record["members"] = list(members)
        self._record(round, record, combined, eval_after)
        log.info("round %d %s: train loss %s, eval loss %.4f -> %.4f (group %s); apply %.1f s (%s)",
                 round, status, "-" if train_loss is None else f"{train_loss:.4f}",
                 eval_before, eval_after, 0 if isinstance(members, str) else len(members),
                 record["apply_s"], parts.describe())
        s.events.publish("round_finished", round=round, status=status,
                         eval_loss_before=eval_before, eval_loss_after=eval_after)

    def _averaging_only(self, round: int) -> bool:
        fed = self.s.config.federation
        return bool(fed.rounds) and round > fed.rounds - fed.final_averaging_rounds

    async def _train(self, round: int) -> tuple[float | None, float]:
        """Local training (unless skipped), then evaluation; returns both losses."""
        s = self.s
        # Right after catching up, the group is already forming: join it with the adapter
        # just adopted instead of arriving a training run late.
        skip, self._just_caught_up = self._just_caught_up, False
        train_loss: float | None = None
        started = time.monotonic()
        if not (self._averaging_only(round) or skip or self.privacy_spent):
            s.set_phase(Phase.TRAINING)
            try:
                train_loss = await asyncio.to_thread(s.exchange.train)
            except (TrainingInterrupted, CheckpointError):
                raise
            except PrivacyBudgetSpentError as exc:
                self.privacy_spent = True
                log.warning("round %d: %s; local training stopped for good, still serving "
                            "and averaging", round, exc)
            except LearningError as exc:
                # e.g. a non-finite loss: the trainer refused the step and kept its weights.
                # Combining with the group still helps; the error is logged and recorded.
                log.error("round %d: local training failed: %s", round, exc)
                s.reject(None, "local-training", str(exc))
        train_s = time.monotonic() - started
        eval_before = (await asyncio.to_thread(s.trainer.evaluate)).loss
        s.store.update_round(round, train_loss=train_loss, eval_loss_before=eval_before,
                             train_s=train_s)
        s.events.publish("trained", round=round, train_loss=train_loss,
                         eval_loss_before=eval_before)
        return train_loss, eval_before

    async def _form_group(self, round: int) -> Formed | str:
        """This round's agreed group, or why there is none."""
        s, fed = self.s, self.s.config.federation
        s.set_phase(Phase.GROUPING)
        view = s.planning_members()
        if not self._averaging_only(round):
            self._refresh_mass(round, len(view))
        formed = await form_group(
            me=s.me,
            round=round,
            view=view,
            group_size=fed.group_size,
            link=s.link,
            mailbox=s.mailbox,
            config=AgreementConfig(
                invite_window=fed.round_deadline_s, final_grace=min(10.0, fed.round_deadline_s)
            ),
            on_reject=lambda peer, why: s.reject(peer, "group", why),
            view_now=s.planning_members,
            up_now=s.up_members,
            awaited=HeartbeatAwaited(s.view, round, AWAIT_HEARTBEATS * s.heartbeat_interval()),
            behind=HeartbeatAwaited(s.view, round, AWAIT_HEARTBEATS * s.heartbeat_interval(),
                                    earlier_only=True),
            past=HeartbeatPast(s.view, round),
            moved_on=HeartbeatPast(s.view, round, later_round_only=True),
        )
        return formed if isinstance(formed, Formed) else formed.reason

    async def _combine(
        self, round: int, members: tuple[str, ...], min_contributors: int
    ) -> tuple[Combined | None, str, str | None]:
        """The mode's exchange with the group: (result, status, note)."""
        s = self.s
        s.set_phase(Phase.AGGREGATING)
        ctx = RoundContext(
            me=s.me,
            round=round,
            members=tuple(sorted(members)),
            link=s.link,
            mailbox=s.mailbox,
            deadline=time.monotonic() + s.config.federation.round_deadline_s,
            on_reject=s.reject,
            min_contributors=min_contributors,
            moved_on=HeartbeatLeft(s.view, round),
        )
        try:
            combined = await s.exchange.combine(ctx, self.progress.mass)
        except RoundAbortedError as exc:
            log.warning("round %d: aggregation aborted: %s", round, exc)
            return None, "aborted", str(exc)
        except _FATAL:
            raise
        except Exception as exc:
            # Anything else came from processing what peers sent (a parser's ValueError, a
            # malformed ciphertext, ...): it ends this round for us, never the daemon.
            why = f"{type(exc).__name__}: {exc}"
            log.error("round %d: aborted by an unexpected error while combining: %s",
                      round, why, exc_info=True)
            s.reject(None, "round", f"round {round} aborted: {why}")
            return None, "aborted", f"unexpected error while combining: {why}"
        return combined, "complete", None

    async def _apply(
        self, round: int, combined: Combined, eval_before: float, point: RollbackPoint | None,
        parts: ApplyParts | None = None,
    ) -> tuple[Combined | None, str, str | None, float | None]:
        """Apply the group's result, behind the validation gate when one is set.

        With ``[federation] max_eval_loss_increase`` set (``point`` is then the state
        before combining), a result that raises our own eval loss by more than that is
        rolled back (adapter, optimiser state, anchor; the mode's own state through
        ``Combined.undo``): the round is recorded
        ``refused``, counted as a ``validation`` rejection, and our carried weight is
        left as it was. Returns (result, status, note, eval loss after applying if it
        was measured).
        """
        s, gate = self.s, self.s.config.federation.max_eval_loss_increase
        parts = parts if parts is not None else ApplyParts()
        if combined.apply is not None:
            s.set_phase(Phase.APPLYING)
            with parts.timing("apply"):
                await asyncio.to_thread(combined.apply)
        eval_after: float | None = None
        if point is not None and gate is not None:
            with parts.timing("eval"):
                eval_after = (await asyncio.to_thread(s.trainer.evaluate)).loss
            if not eval_after <= eval_before + gate:  # a NaN loss is refused too
                with parts.timing("apply"):
                    await asyncio.to_thread(s.trainer.roll_back, point)
                    if combined.undo is not None:
                        combined.undo()
                why = (f"the group's result raised our eval loss from {eval_before:.4f} to "
                       f"{eval_after:.4f}, more than max_eval_loss_increase = {gate}; "
                       "kept our own model")
                log.warning("round %d: %s", round, why)
                s.reject(None, "validation", f"round {round}: {why}")
                return None, "refused", why, eval_before
        if combined.carried_weight is not None:
            self.progress.mass = combined.carried_weight
        self.progress.last_aggregated_round = round
        return combined, "complete", None, eval_after

    async def _checkpoint(
        self, round: int, eval_loss: float | None = None, parts: ApplyParts | None = None
    ) -> float:
        """Evaluate (unless ``eval_loss`` is already known), record sample outputs, write
        the checkpoint; returns the eval loss. Each part's time goes into ``parts``."""
        s = self.s
        parts = parts if parts is not None else ApplyParts()
        eval_after = eval_loss
        if eval_after is None:
            with parts.timing("eval"):
                eval_after = (await asyncio.to_thread(s.trainer.evaluate)).loss
        train = s.config.train
        if train.samples_per_round > 0:
            with parts.timing("samples"):
                samples = await asyncio.to_thread(
                    s.trainer.sample_outputs, train.samples_per_round, train.sample_max_new_tokens
                )
                s.store.add_samples(round, samples)
        s.set_phase(Phase.CHECKPOINTING)
        with parts.timing("checkpoint"):
            await asyncio.to_thread(s.trainer.save_checkpoint, self.checkpoint_dir, round)
        with parts.timing("publish"):
            self._publish_adapter(round)
        self.progress.eval_loss_last = eval_after
        return eval_after

    async def _score_sets(self, round: int, changed: bool, parts: ApplyParts) -> None:
        """``[eval]``: score the round's model on the configured sets, in the worker thread.

        Skipped between ``every_rounds``, and when nothing changed the model this round
        (no training, nothing applied): the last scores already describe it. A failure is
        logged and the round goes on; the scores are a report, not part of the round.
        """
        s, sets = self.s, self.s.round_eval
        if sets is None or not sets.settings.due(round):
            return
        if not changed:
            log.info("round %d: model unchanged (nothing trained or applied); [eval] sets "
                     "not scored again", round)
            return
        try:
            with parts.timing("eval_sets"):
                scores = await asyncio.to_thread(sets.score, s.trainer)  # type: ignore[arg-type]
        except _FATAL:
            raise
        except Exception as exc:
            log.error("round %d: [eval] sets not scored: %s: %s", round, type(exc).__name__, exc)
            return
        s.store.set_round_eval(round, scores)

    def _record(self, round: int, record: dict[str, Any], combined: Combined | None,
                eval_after: float) -> None:
        """The round log row and the mode's dashboard event: the one place both are written."""
        s = self.s
        record.update(finished_at=time.time(), eval_loss_after=eval_after,
                      adapter_fingerprint=self.progress.adapter_fingerprint)
        if combined is not None:
            record.update(combined.record)
            if combined.event is not None:
                name, event = combined.event
                s.store.add_event(name, event)  # the dashboard's panels survive restarts
                s.events.publish(name, **event)
        s.store.update_round(round, **record)

    # -- weight and catch-up --------------------------------------------------------------

    def _refresh_mass(self, round: int, n_up: int) -> None:
        """Reset the carried averaging weight to the sample count at each pass over the grid.

        Within a pass, groups hand each member ``group total / group size`` so the
        federation converges to the sample-weighted average (docs/aggregation.md);
        at a new pass, fresh local training makes the sample count the right weight again.
        """
        p = self.progress
        epoch = epoch_of(round, max(n_up, 1), self.s.config.federation.group_size)
        if epoch != p.mass_epoch:
            p.mass_epoch = epoch
            p.mass = float(self.s.trainer.num_train_samples)

    def _publish_adapter(self, round_done: int) -> None:
        """Remember the adapter of the last complete round: what we hand to peers catching up."""
        trainer, p = self.s.trainer, self.progress
        vector, p.adapter_fingerprint = trainer.adapter_snapshot()
        p.published = (round_done, vector, p.mass or float(trainer.num_train_samples))

    async def _catch_up(self) -> bool:
        """If a quorum of up members are ahead of us, follow them (``federation.catch_up``).

        Adopt the adapter a quorum hold (checked against their fingerprint before it is
        loaded), or else skip to the round a quorum have completed with our own adapter.
        Never beyond the federation's target. Returns True when we jumped ahead (the
        caller re-checks the round target); a failed catch-up is logged and we train on.
        """
        s, p = self.s, self.progress
        if not s.exchange.adopts_neighbour_adapters:
            return False
        plan = catch_up_plan(s.view(), s.is_member, s.me, p.round,
                             max_round=s.config.federation.rounds or MAX_ROUND)
        if plan is None:
            return False
        s.set_phase(Phase.CATCHING_UP)
        if isinstance(plan, SkipAhead):
            log.info("%d of %d up members have completed round %d, we are at %d, and no "
                     "adapter has a quorum: skipping ahead with our own adapter",
                     plan.confirmed_by, plan.up_members, plan.round, p.round)
            await self._adopt(plan.round, None, skipped_from=p.round + 1)
            return True
        return await self._adopt_quorum_adapter(plan)

    async def _adopt_quorum_adapter(self, plan: AdoptAdapter) -> bool:
        s, p = self.s, self.progress
        peer = s.adapters.least_recently_asked(plan.holders)
        log.info("%d of %d up members hold the adapter of round %d, we are at %d: "
                 "pulling it from %s", len(plan.holders), plan.up_members, plan.round,
                 p.round, peer[-8:])
        try:
            pulled = await s.adapters.pull(peer, p.round, s.trainer.adapter_size,
                                           CATCH_UP_TIMEOUT_S)
            fingerprint = await asyncio.to_thread(s.trainer.fingerprint_of, pulled.vector)
            newest = s.config.federation.rounds or MAX_ROUND
            if plan.round < pulled.round <= newest:
                newer = await self._quorum_for_newer(pulled.round, fingerprint)
                if newer is None:
                    log.info("catch-up: %s answered with its round %d, newer than the "
                             "quorum's %d, and no quorum advertises it yet; training on",
                             peer[-8:], pulled.round, plan.round)
                    return False  # the holder moved on, as honest ones do: no blame
                plan = newer
            check_pulled(pulled, plan, fingerprint)
            await asyncio.to_thread(s.trainer.load_adapter_vector, pulled.vector)
        except _FATAL:
            raise
        except Exception as exc:
            log.warning("catch-up from %s failed: %s: %s; training on",
                        peer[-8:], type(exc).__name__, exc)
            if not isinstance(exc, TimeoutError):  # a silent holder may just be busy
                s.reject(peer, "catch-up", f"{type(exc).__name__}: {exc}")
            return False
        await self._adopt(pulled.round, peer, skipped_from=p.round + 1)
        return True

    async def _quorum_for_newer(self, round: int, fingerprint: str) -> AdoptAdapter | None:
        """The quorum advertising ``(round, fingerprint)`` (a holder's answer newer than
        planned), once their heartbeats say so: waits up to ``AWAIT_HEARTBEATS`` heartbeats."""
        s = self.s
        give_up = time.monotonic() + AWAIT_HEARTBEATS * s.heartbeat_interval()
        while not s.stopping.is_set():
            quorum = quorum_for(s.view(), s.is_member, s.me, round, fingerprint)
            if quorum is not None or time.monotonic() >= give_up:
                return quorum
            await asyncio.sleep(0.2)
        return None

    async def _adopt(self, round: int, source: str | None, skipped_from: int) -> None:
        """Record a catch-up to ``round``: the adapter from ``source`` is already loaded.

        ``source`` None: no adapter had a quorum, we keep our own and only skip rounds.
        """
        s, p = self.s, self.progress
        p.round = round
        s.mailbox.advance(round + 1)
        p.mass_epoch = -1  # a fresh mass at our next round
        p.mass = float(s.trainer.num_train_samples)
        eval_after = (await asyncio.to_thread(s.trainer.evaluate)).loss
        await asyncio.to_thread(s.trainer.save_checkpoint, self.checkpoint_dir, round)
        self._publish_adapter(round)
        p.eval_loss_last = eval_after
        s.store.begin_round(round)
        s.store.update_round(
            round, status="caught_up", finished_at=time.time(), eval_loss_after=eval_after,
            adapter_fingerprint=p.adapter_fingerprint,
            note=f"skipped rounds {skipped_from}-{round}: " + (
                f"adopted the adapter of {source} after its round {round}" if source else
                "no adapter had a quorum of up members; kept our own"),
        )
        s.events.publish("caught_up", round=round, source=source or "")
        self._just_caught_up = True
