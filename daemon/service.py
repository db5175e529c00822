"""The daemon: one long-lived process per organisation.

It wires the layers together and runs the round loop; the layers themselves
stay ignorant of each other:

* ``p2p`` carries signed blobs and heartbeats between roster members;
* ``learning`` trains and evaluates the local adapter (in a worker thread: torch
  releases the GIL, and the event loop must keep serving the network);
* ``secagg`` turns a group's updates into their average without revealing any
  single one (its HE work runs in a process pool);
* ``webui`` reads the daemon through ``DaemonStatusView``.

One round: train → form a group → average within it → apply → evaluate →
checkpoint → record. A round is recorded ``complete`` only after its checkpoint
is on disk, so a crash at any point resumes at the last complete round.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web
from fedswarm.learning.adapter_vector import flatten_state, state_fingerprint, unflatten_state
from fedswarm.learning.checkpoint_files import has_checkpoint
from fedswarm.learning.errors import CheckpointError, LearningError
from fedswarm.learning.fedmkt import PublicDataset, VocabMappingCache
from fedswarm.learning.moment_averaging import averaged_length, explain_refusal, layout_note
from fedswarm.learning.trainer import LocalTrainer
from fedswarm.p2p.errors import P2PError
from fedswarm.p2p.identity import Identity, verify_signature
from fedswarm.p2p.membership import Membership, MembershipConfig
from fedswarm.p2p.node import BlobHeader, NodeConfig, P2PNode
from fedswarm.p2p.roster import Roster
from fedswarm.secagg.he import make_executor
from fedswarm.webui.app import create_app

from .catch_up import REQUEST_KIND, RESPONSE_KIND, AdapterExchange, most_advanced_peer
from .config import Config, load_config
from .errors import ConfigError, RoundAbortedError
from .events import EventBus
from .fedmkt_config import load_checked_public_set
from .fedmkt_round import FedMKTOutcome, fedmkt_event, fedmkt_record, run_fedmkt_exchange
from .group_agreement import AgreementConfig, Formed
from .group_formation import form_group
from .grouping import epoch_of
from .he_pool import HEPoolStartError, warm_up
from .logging_setup import set_level
from .mailbox import Letter, Mailbox, MailboxRejected
from .plain_averaging import GroupAverage, plain_group_average
from .sdnotify import Notifier
from .secure_averaging import secure_group_average
from .staleness import staleness
from .state import StateStore
from .status_view import DaemonStatusView, fedswarm_version

log = logging.getLogger("fedswarm.daemon")

SHUTDOWN_GRACE_S = 30.0
BLOB_KINDS = (
    "plain-update", "secagg", "group", "fedmkt", "fedmkt-card", REQUEST_KIND, RESPONSE_KIND
)
CATCH_UP_TIMEOUT_S = 30.0


class TrainingInterrupted(Exception):
    """Raised from the training callback to stop local training at shutdown."""


@dataclass
class RoundOutcome:
    round: int
    status: str
    eval_loss_after: float


class Daemon:
    """Owns the daemon's parts and runs until ``request_stop`` (SIGTERM) is called."""

    def __init__(self, config: Config, identity: Identity, roster: Roster, api_token: str) -> None:
        self.config = config
        self.identity = identity
        self.roster = roster
        self.api_token = api_token
        self.events = EventBus()
        self.state = "starting"
        self.current_round = 0
        self.started_at = time.time()
        self.eval_loss_start: float | None = None
        self.eval_loss_last: float | None = None
        self.adapter_fingerprint = ""
        self.store: StateStore | None = None
        self.trainer: LocalTrainer | None = None
        self.node: P2PNode | None = None
        self.membership: Membership | None = None
        self.mailbox = Mailbox(
            max_bytes_per_sender_per_round=2 * config.node.max_blob_mb * 2**20
        )
        self._stop = asyncio.Event()
        self._api_runner: web.AppRunner | None = None
        self._he_pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._he_warming: asyncio.Task[tuple[int, float]] | None = None
        self.he_pool_start_s: float | None = None  # how long the HE worker took to start
        self.api_url = ""
        self.notifier = Notifier()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.mass = 0.0
        self._mass_epoch = -1
        self.last_aggregated_round: int | None = None
        self._fedmkt_public: PublicDataset | None = None
        self.adapter_exchange: AdapterExchange | None = None
        self._just_caught_up = False
        self._published: tuple[int, np.ndarray, float] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        """Start everything, run rounds until stopped, then shut down cleanly."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            await self._start()
            self.notifier.ready()
            watchdog = asyncio.create_task(self._watchdog(), name="watchdog")
            round_task = asyncio.create_task(self._round_loop(), name="round-loop")
            stop_task = asyncio.create_task(self._stop.wait(), name="stop")
            await asyncio.wait({round_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            if round_task.done():
                error = round_task.exception()
                if error is not None:
                    raise error
                await stop_task  # rounds are done: keep serving peers and the API until stopped
            else:
                self._set_state("stopping")
                try:
                    await asyncio.wait_for(round_task, timeout=SHUTDOWN_GRACE_S)
                except (TimeoutError, asyncio.CancelledError):
                    log.warning("round did not finish within %.0f s of SIGTERM; aborted",
                                SHUTDOWN_GRACE_S)
            stop_task.cancel()
            watchdog.cancel()
        finally:
            await self._shutdown()

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("stop requested")
            self.notifier.stopping()
            self._stop.set()

    def reload(self) -> None:
        """SIGHUP: re-read the roster and the log level without a restart.

        A roster or config that does not load is logged and ignored: the daemon keeps
        running with what it had.
        """
        self.notifier.reloading()
        try:
            try:
                level = load_config(self.config.source).node.log_level
                set_level(level)
                self.config.node.log_level = level
            except Exception as exc:
                log.error("SIGHUP: log level not reloaded: %s", exc)
            try:
                roster = Roster.load(self.config.roster_path)
                if roster.federation_id != self.roster.federation_id:
                    raise ValueError(
                        f"federation id changed from {self.roster.federation_id!r} to "
                        f"{roster.federation_id!r}; restart to join another federation"
                    )
                if self.node is not None:
                    self.node.set_roster(roster)
                self.roster = roster
            except Exception as exc:
                log.error("SIGHUP: roster not reloaded: %s", exc)
                return
            log.info("SIGHUP: roster reloaded (%d members)", len(roster.members))
            self.events.publish("roster", members=len(roster.members))
        finally:
            self.notifier.ready()

    async def _watchdog(self) -> None:
        """Ping systemd's watchdog while the event loop is alive."""
        interval = Notifier.watchdog_interval_s()
        if interval is None:
            return
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    async def _start(self) -> None:
        cfg = self.config
        self.store = StateStore.open(cfg.state_dir)
        rolled_back = self.store.mark_interrupted_rounds()
        if rolled_back:
            log.warning("rounds %s were interrupted by a restart and rolled back", rolled_back)
        self._set_state("loading")
        self._he_pool = make_executor(max_workers=1)
        if self._uses_secure_aggregation():  # the worker starts while the model loads
            self._he_warming = asyncio.create_task(warm_up(self._he_pool), name="he-warm-up")
        trainer = await asyncio.to_thread(
            LocalTrainer, cfg.model, cfg.lora, cfg.data, cfg.train, on_step=self._on_train_step
        )
        self.trainer = trainer
        self.current_round = await asyncio.to_thread(self._restore_checkpoint)
        self.adapter_fingerprint = state_fingerprint(trainer.adapter_state())
        self.node = P2PNode(
            self.identity,
            self.roster,
            NodeConfig(
                listen=cfg.node.listen,
                bootstrap=tuple(cfg.node.bootstrap),
                max_blob_bytes=cfg.node.max_blob_mb * 2**20,
                max_inbound_bytes=cfg.node.max_inbound_mb * 2**20,
                max_inbound_blobs_per_peer=cfg.node.max_inbound_blobs_per_peer,
                blob_timeout_s=max(cfg.federation.round_deadline_s, 30.0),
                enable_mdns=cfg.node.enable_mdns,
                mdns_interface=cfg.node.mdns_interface,
                enable_dht=cfg.node.enable_dht,
            ),
            on_blob=self._on_blob,
            on_gossip=self._on_gossip,
        )
        await self.node.start()
        self.adapter_exchange = AdapterExchange(self.node.send_blob, lambda: self._published)
        self.membership = Membership(
            self.node,
            cfg.node.org,
            MembershipConfig(
                interval_s=cfg.federation.heartbeat_s,
                down_after_s=cfg.federation.peer_timeout_s,
                version=fedswarm_version(),
            ),
        )
        self._publish_local_state()
        await self._finish_he_warm_up()  # before peers hear of us: no round on a cold worker
        await self.membership.start()
        await self._start_api()
        log.info(
            "peer %s (%s) listening on %s; API %s",
            self.identity.peer_id, cfg.node.org, ", ".join(self.node.listen_addrs), self.api_url,
        )

    def _uses_secure_aggregation(self) -> bool:
        # FedMKT uses it too: a same-tokenizer group averages its predictions securely.
        return self.config.federation.secure_aggregation != "none"

    async def _finish_he_warm_up(self) -> None:
        """Wait for the HE worker started in ``_start``; a failure is logged, not fatal.

        Without a ready worker the daemon still starts: secure rounds get a fresh pool,
        which starts its worker lazily and aborts the round cleanly if HE really is
        broken, so one bad start never takes the API and the round log down with it.
        """
        if self._he_warming is None:
            return
        try:
            pid, seconds = await self._he_warming
        except HEPoolStartError as exc:
            log.error("%s; a fresh HE pool will be tried at the first secure round", exc)
            if self._he_pool is not None:
                self._he_pool.shutdown(wait=False, cancel_futures=True)
            self._he_pool = make_executor(max_workers=1)
            return
        finally:
            self._he_warming = None
        self.he_pool_start_s = seconds
        log.info("HE worker %d ready after %.1f s, before any round", pid, seconds)

    async def _shutdown(self) -> None:
        self._set_state("stopped")
        if self._he_warming is not None:
            self._he_warming.cancel()
        if self.membership is not None:
            await self.membership.stop()
        if self.node is not None:
            await self.node.stop()
        if self._api_runner is not None:
            await self._api_runner.cleanup()
        if self._he_pool is not None:
            self._he_pool.shutdown(wait=False, cancel_futures=True)
        if self.store is not None:
            self.store.close()

    async def _start_api(self) -> None:
        view = DaemonStatusView(self)
        app = create_app(view, self.api_token)
        self._api_runner = web.AppRunner(app, access_log=None)
        await self._api_runner.setup()
        site = web.TCPSite(self._api_runner, self.config.api.host, self.config.api.port)
        await site.start()
        port = self._api_runner.addresses[0][1] if self._api_runner.addresses else 0
        self.api_url = f"http://{self.config.api.host}:{port}"
        self._write_runtime_file()

    def _write_runtime_file(self) -> None:
        """Record where the API listens, for ``fedswarm status`` when the port is 0 (auto)."""
        path = self.config.state_dir / "api.url"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.api_url + "\n")
        os.replace(tmp, path)

    # -- checkpoints ----------------------------------------------------------------------

    @property
    def checkpoint_dir(self) -> Path:
        return self.config.state_dir / "checkpoint"

    def _restore_checkpoint(self) -> int:
        """Load the last checkpoint if there is one; returns the round it completed."""
        assert self.trainer is not None and self.store is not None
        if has_checkpoint(self.checkpoint_dir):
            round_done = self.trainer.load_checkpoint(self.checkpoint_dir)
            self._publish_adapter(round_done)
            if self.store.mark_recovered(round_done):
                log.warning("round %d was checkpointed just before a crash; recorded as "
                            "recovered", round_done)
            log.info("resumed from checkpoint of round %d", round_done)
            initial = self.store.round_record(0)
            if initial is not None:
                self.eval_loss_start = initial.eval_loss_after
            last = [r for r in self.store.rounds(limit=20) if r.eval_loss_after is not None]
            if last:
                self.eval_loss_last = last[-1].eval_loss_after
            return round_done
        report = self.trainer.evaluate()
        self.eval_loss_start = self.eval_loss_last = report.loss
        self.store.begin_round(0)
        self.store.update_round(
            0, status="initial", eval_loss_after=report.loss, finished_at=time.time(),
            note="evaluation before any training",
        )
        return 0

    # -- the round loop -------------------------------------------------------------------

    async def _round_loop(self) -> None:
        fed = self.config.federation
        await self._wait_for_peers()
        while not self._stop.is_set():
            next_round = self.current_round + 1
            if fed.rounds and next_round > fed.rounds:
                break
            try:
                if await self._catch_up():
                    continue
                await self._run_round(next_round)
            except TrainingInterrupted:
                return
        if not self._stop.is_set():
            self._set_state("done")
            log.info("all %d rounds done; serving peers until stopped", fed.rounds)

    async def _wait_for_peers(self) -> None:
        fed = self.config.federation
        if fed.wait_for_peers <= 1:
            return
        self._set_state("waiting_for_peers")
        deadline = time.monotonic() + fed.wait_for_peers_s
        while time.monotonic() < deadline and not self._stop.is_set():
            if len(self.up_members()) >= fed.wait_for_peers:
                return
            await asyncio.sleep(0.2)
        log.warning(
            "only %d of %d peers up after %.0f s; starting anyway",
            len(self.up_members()), fed.wait_for_peers, fed.wait_for_peers_s,
        )

    def up_members(self) -> list[str]:
        """Roster members we consider up now, including ourselves, sorted."""
        assert self.membership is not None
        up = set(self.membership.up_peers(self.config.federation.peer_timeout_s))
        up.add(self.identity.peer_id)
        return sorted(p for p in up if self.roster.is_member(p))

    async def _run_round(self, round: int) -> None:
        assert self.trainer is not None and self.store is not None and self.node is not None
        fed = self.config.federation
        self.current_round = round
        self.mailbox.advance(round)
        self.store.begin_round(round)
        self.events.publish("round_started", round=round)

        averaging_only = bool(fed.rounds) and round > fed.rounds - fed.final_averaging_rounds
        # Right after catching up, the group is already forming: join it with the adapter
        # just adopted instead of arriving a training run late.
        skip_training, self._just_caught_up = self._just_caught_up, False
        train_loss: float | None = None
        started = time.monotonic()
        if not (averaging_only or skip_training):
            self._set_state("training")
            try:
                train_loss = (await asyncio.to_thread(self.trainer.train)).loss
            except (TrainingInterrupted, CheckpointError):
                raise
            except LearningError as exc:
                # e.g. a non-finite loss: the trainer refused the step and kept its weights.
                # Averaging with the group still helps; the error is logged and recorded.
                log.error("round %d: local training failed: %s", round, exc)
                self._reject(None, "local-training", str(exc))
        train_s = time.monotonic() - started
        eval_before = await asyncio.to_thread(self.trainer.evaluate)
        self.store.update_round(
            round, train_loss=train_loss, eval_loss_before=eval_before.loss, train_s=train_s
        )
        self.events.publish("trained", round=round, train_loss=train_loss,
                            eval_loss_before=eval_before.loss)

        self._set_state("grouping")
        view = self.up_members()
        if not averaging_only:
            self._refresh_mass(round, len(view))
        formed = await form_group(
            me=self.identity.peer_id,
            round=round,
            view=view,
            group_size=fed.group_size,
            send_blob=self.node.send_blob,
            mailbox=self.mailbox,
            config=AgreementConfig(
                invite_window=fed.round_deadline_s, final_grace=min(10.0, fed.round_deadline_s)
            ),
            on_reject=lambda peer, why: self._reject(peer, "group", why),
        )
        apply_started = time.monotonic()
        status, note = "local_only", None
        outcome: GroupAverage | None = None
        mkt: FedMKTOutcome | None = None
        group = formed.members if isinstance(formed, Formed) else None
        if not isinstance(formed, Formed):
            note = f"no group this round: {formed.reason}"
        else:
            self._set_state("aggregating")
            try:
                if fed.mode == "fedmkt":  # models differ: distil from peers, never average
                    mkt = await self._fedmkt_exchange(round, list(formed.members))
                else:
                    outcome = await self._aggregate(round, list(formed.members))
                    self.mass = outcome.total_weight / len(outcome.survivors)
                status = "complete"
                self.last_aggregated_round = round
            except RoundAbortedError as exc:
                status, note = "aborted", str(exc)
                log.warning("round %d: aggregation aborted: %s", round, exc)
        if outcome is not None:
            self._set_state("applying")
            apply_started = time.monotonic()
            await asyncio.to_thread(self.trainer.load_averaging_vector, outcome.average,
                                    self._averages_moments())
        eval_after = await asyncio.to_thread(self.trainer.evaluate)
        self._set_state("checkpointing")
        await asyncio.to_thread(self.trainer.save_checkpoint, self.checkpoint_dir, round)
        self._publish_adapter(round)
        self.eval_loss_last = eval_after.loss
        record: dict[str, Any] = {
            "status": status,
            "finished_at": time.time(),
            "eval_loss_after": eval_after.loss,
            "apply_s": time.monotonic() - apply_started,
            "adapter_fingerprint": self.adapter_fingerprint,
            "note": note,
            "staleness": staleness(round, self.last_aggregated_round),
        }
        if group is not None:
            record["members"] = list(group)
        if outcome is not None:
            record.update(
                survivors=outcome.survivors,
                dropped=outcome.dropped,
                protocol=outcome.protocol,
                aggregator=outcome.aggregator,
                decryptor=outcome.decryptor,
                bytes_sent=outcome.bytes_sent,
                bytes_received=outcome.bytes_received,
                aggregate_s=outcome.timings.get("aggregate_s"),
            )
        if mkt is not None:
            record.update(fedmkt_record(self.identity.peer_id, mkt))
            event = fedmkt_event(self.identity.peer_id, round, mkt)
            self.store.add_event("fedmkt", event)  # the dashboard's FedMKT panel survives restarts
            self.events.publish("fedmkt", **event)
        self.store.update_round(round, **record)
        log.info(
            "round %d %s: train loss %s, eval loss %.4f -> %.4f (group %s)",
            round, status, "-" if train_loss is None else f"{train_loss:.4f}",
            eval_before.loss, eval_after.loss,
            len(group) if group else 0,
        )
        self.events.publish("round_finished", round=round, status=status,
                            eval_loss_before=eval_before.loss, eval_loss_after=eval_after.loss)

    async def _fedmkt_exchange(self, round: int, group: list[str]) -> FedMKTOutcome:
        """FedMKT instead of averaging: exchange public-set knowledge, distil (fedmkt_round)."""
        assert self.trainer is not None and self.node is not None
        if self._fedmkt_public is None:
            try:
                self._fedmkt_public = await asyncio.to_thread(
                    load_checked_public_set, self.config.fedmkt, self.config.source
                )
            except ConfigError as exc:
                raise RoundAbortedError(str(exc)) from exc
        fed = self.config.federation
        secure = None
        if fed.secure_aggregation != "none":  # homogeneous groups may average securely
            assert self._he_pool is not None
            secure = functools.partial(
                secure_group_average, federation_id=self.roster.federation_id, round=round,
                group=group, identity=self.identity, verify=self._verify_member_signature,
                node=self.node, mailbox=self.mailbox, step_timeout_s=fed.round_deadline_s,
                executor=self._he_pool,
            )
        return await run_fedmkt_exchange(
            me=self.identity.peer_id,
            group=group,
            round=round,
            model=self.trainer.model,
            tokenizer=self.trainer.tokenizer,
            public=self._fedmkt_public,
            section=self.config.fedmkt,
            send_blob=self.node.send_blob,
            mailbox=self.mailbox,
            deadline=time.monotonic() + self.config.federation.round_deadline_s,
            on_reject=lambda peer, why: self._reject(peer, "fedmkt", why),
            mapping_cache=VocabMappingCache(self.config.state_dir / "vocab-maps"),
            seed=self.config.train.seed * 100_003 + round,
            secure_average=secure,
        )

    async def _aggregate(self, round: int, group: list[str]) -> GroupAverage:
        assert self.trainer is not None and self.node is not None
        fed = self.config.federation
        with_moments = self._averages_moments()
        vector = await asyncio.to_thread(self.trainer.averaging_vector, with_moments)
        # Members that disagree on the layout send vectors of different lengths and refuse
        # each other; say why in the log line.
        adapter_size = vector.size // averaged_length(1, with_moments)
        layout = layout_note(adapter_size, with_moments)
        weight = self.mass
        deadline = time.monotonic() + fed.round_deadline_s
        if fed.secure_aggregation == "none":
            outcome = await plain_group_average(
                me=self.identity.peer_id,
                group=group,
                round=round,
                vector=vector,
                weight=weight,
                send_blob=self.node.send_blob,
                mailbox=self.mailbox,
                deadline=deadline,
                on_reject=lambda peer, why: self._reject(peer, "plain-update", explain_refusal(
                    why, adapter_size, with_moments)),
            )
        else:
            assert self._he_pool is not None
            outcome = await self._secure_average(round, group, vector, weight, layout)
        if len(outcome.survivors) < 3:
            raise RoundAbortedError(
                f"only {len(outcome.survivors)} of {len(group)} group members took part"
            )
        return outcome

    def _averages_moments(self) -> bool:
        """Whether AdamW moments travel with the adapter (never in fedmkt: models differ)."""
        fed = self.config.federation
        return fed.mode == "lora_avg" and fed.average_optimizer_state

    async def _secure_average(self, round: int, group: list[str], vector: np.ndarray,
                              weight: float, layout: str) -> GroupAverage:
        """Secure aggregation; a failed session names our layout, the usual disagreement."""
        assert self.node is not None and self._he_pool is not None
        try:
            return await secure_group_average(
                federation_id=self.roster.federation_id,
                round=round,
                group=group,
                identity=self.identity,
                verify=self._verify_member_signature,
                vector=vector,
                weight=weight,
                node=self.node,
                mailbox=self.mailbox,
                step_timeout_s=self.config.federation.round_deadline_s,
                executor=self._he_pool,
            )
        except RoundAbortedError as exc:
            raise RoundAbortedError(f"{exc} ({layout})") from exc

    def _publish_adapter(self, round_done: int) -> None:
        """Remember the adapter of the last complete round: what we hand to peers catching up."""
        assert self.trainer is not None
        state = self.trainer.adapter_state()
        vector, _ = flatten_state(state)
        self._published = (round_done, vector, self.mass or float(self.trainer.num_train_samples))
        self.adapter_fingerprint = state_fingerprint(state)

    async def _catch_up(self) -> bool:
        """If the federation is rounds ahead of us, adopt a neighbour's adapter and round.

        Returns True when we jumped ahead (the caller re-checks the round target).
        """
        assert self.membership is not None and self.trainer is not None
        assert self.adapter_exchange is not None and self.store is not None
        if self.config.federation.mode == "fedmkt":
            return False  # peers run different models: a neighbour's adapter does not fit ours
        target = most_advanced_peer(
            self.membership.view(), self.roster.is_member, self.current_round
        )
        if target is None:
            return False
        peer, their_round = target
        self._set_state("catching_up")
        log.info("federation is at round %d, we are at %d: pulling the adapter from %s",
                 their_round, self.current_round, peer[-8:])
        vector, manifest = flatten_state(self.trainer.adapter_state())
        try:
            pulled = await self.adapter_exchange.pull(
                peer, self.current_round, vector.size, CATCH_UP_TIMEOUT_S
            )
            if pulled.round <= self.current_round:
                return False
            await asyncio.to_thread(
                self.trainer.load_adapter_state, unflatten_state(pulled.vector, manifest)
            )
        except (TimeoutError, P2PError, LearningError, ValueError) as exc:
            log.warning("catch-up from %s failed: %s; training on", peer[-8:], exc)
            return False
        skipped_from = self.current_round + 1
        self.current_round = pulled.round
        self.mailbox.advance(pulled.round + 1)
        self._mass_epoch = -1  # a fresh mass at our next round
        self.mass = float(self.trainer.num_train_samples)
        eval_after = await asyncio.to_thread(self.trainer.evaluate)
        await asyncio.to_thread(self.trainer.save_checkpoint, self.checkpoint_dir, pulled.round)
        self._publish_adapter(pulled.round)
        self.eval_loss_last = eval_after.loss
        self.store.begin_round(pulled.round)
        self.store.update_round(
            pulled.round,
            status="caught_up",
            finished_at=time.time(),
            eval_loss_after=eval_after.loss,
            adapter_fingerprint=self.adapter_fingerprint,
            note=f"skipped rounds {skipped_from}-{pulled.round}: adopted the adapter of "
                 f"{peer} after its round {pulled.round}",
        )
        self.events.publish("caught_up", round=pulled.round, source=peer)
        self._just_caught_up = True
        return True

    def _refresh_mass(self, round: int, n_up: int) -> None:
        """Reset the carried averaging weight to the sample count at each pass over the grid.

        Within a pass, groups hand each member ``group total / group size`` so the
        federation converges to the sample-weighted average (docs/aggregation.md);
        at a new pass, fresh local training makes the sample count the right weight again.
        """
        assert self.trainer is not None
        epoch = epoch_of(round, max(n_up, 1), self.config.federation.group_size)
        if epoch != self._mass_epoch:
            self._mass_epoch = epoch
            self.mass = float(self.trainer.num_train_samples)

    def _verify_member_signature(self, peer_id: str, data: bytes, signature: bytes) -> bool:
        return self.roster.is_member(peer_id) and verify_signature(peer_id, data, signature)

    # -- callbacks from the network and the trainer ------------------------------------

    async def _on_blob(self, header: BlobHeader, payload: bytes) -> None:
        if header.kind not in BLOB_KINDS:
            self._reject(header.sender, header.kind, "unknown blob kind")
            return
        if header.kind in (REQUEST_KIND, RESPONSE_KIND):
            if self.adapter_exchange is None:
                return
            reason = (
                self.adapter_exchange.on_request(header.sender)
                if header.kind == REQUEST_KIND
                else self.adapter_exchange.on_response(header.sender, header.round, payload)
            )
            if reason is not None:
                self._reject(header.sender, header.kind, reason)
            return
        try:
            self.mailbox.put(Letter(header.sender, header.round, header.kind, payload))
        except MailboxRejected as exc:
            self._reject(header.sender, header.kind, str(exc))

    async def _on_gossip(self, topic: str, sender: str, payload: bytes) -> None:
        if self.membership is not None:
            await self.membership.handle_gossip(topic, sender, payload)

    def _on_train_step(self, step: int, loss: float) -> None:
        """Runs in the training thread: record the step, and stop early on shutdown."""
        if self._stop.is_set():
            raise TrainingInterrupted()
        if self.store is not None:
            self.store.add_step_metric(self.current_round, step, loss)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(
                lambda: self.events.publish("train_step", round=self.current_round, step=step,
                                            loss=loss)
            )

    def _publish_local_state(self) -> None:
        """What our next heartbeat tells peers about us."""
        if self.membership is not None:
            self.membership.update_local(
                round=self.current_round, state=self.state, fingerprint=self.adapter_fingerprint
            )

    def _reject(self, peer: str | None, kind: str, reason: str) -> None:
        log.warning("rejected %s from %s: %s", kind, (peer or "?")[-8:], reason)
        if self.store is not None:
            self.store.add_rejection(peer, kind, reason)
        self.events.publish("rejected", peer_id=peer, kind=kind, reason=reason)

    def _set_state(self, state: str) -> None:
        self.state = state
        self.notifier.status(f"round {self.current_round}: {state}")
        self._publish_local_state()
        self.events.publish("state", state=state, round=self.current_round)
