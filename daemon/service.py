"""The daemon: one long-lived process per organisation.

It starts the parts, routes what arrives from the network, answers signals, and stops;
the rounds themselves run in ``round_runner.py``. The layers stay ignorant of each other:

* ``p2p`` carries signed blobs, messages and heartbeats between roster members;
* ``learning`` trains and evaluates the local adapter (in a worker thread: torch
  releases the GIL, and the event loop must keep serving the network);
* ``federation`` runs the round's protocols (groups, averaging, FedMKT, catch-up) over
  a ``Link`` that ``node_link.py`` implements on the p2p node;
* ``secagg`` turns a group's updates into their average without revealing any single
  one (its HE work runs in a process pool);
* ``webui`` reads the daemon through ``views.DaemonStatusView``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from fedswarm.federation.averaging.secure import SecureAggregation
from fedswarm.federation.catch_up import REQUEST_KIND, AdapterExchange
from fedswarm.federation.exchange import MemberParts
from fedswarm.federation.link import (
    CATCH_UP_KINDS,
    MAILBOX_KINDS,
    PACKAGE_KINDS,
    PACKAGE_REQUEST_KIND,
)
from fedswarm.federation.mailbox import Letter, Mailbox, MailboxRejected
from fedswarm.federation.modes import make_exchange
from fedswarm.federation.modes.offsite import OwnerStateError
from fedswarm.federation.round import Phase
from fedswarm.learning.evaluation.per_round import RoundEvalSets
from fedswarm.learning.trainer import LocalTrainer
from fedswarm.p2p.identity import Identity, verify_signature
from fedswarm.p2p.membership import HEARTBEAT_KIND, Membership, MembershipConfig
from fedswarm.p2p.node import BlobHeader, NodeConfig, P2PNode
from fedswarm.p2p.roster import Roster
from fedswarm.secagg.he import make_executor
from fedswarm.secagg.spool import remove_leftovers
from fedswarm.webui.app import create_app

from .config import Config, load_config
from .errors import ListenError, NetworkLayerEndedError, StateError
from .events import EventBus
from .he_pool import HEPoolStartError, warm_up
from .logging_setup import set_level
from .node_link import NodeLink
from .offsite_start import OffsiteStart
from .ownership import mark_plan
from .ports import listen_problem
from .round_runner import (
    CHECKPOINT_DIR,
    MemberServices,
    Progress,
    RoundRunner,
    RoundTrainer,
    TrainingInterrupted,
)
from .screening import ScreenSummary, record_screening
from .sdnotify import Notifier
from .state import StateStore
from .views.status import DaemonStatusView, fedswarm_version

if TYPE_CHECKING:
    from fedswarm.federation.averaging.group_dp import GroupPrivacy
    from fedswarm.learning.ownership import MarkPlan
    from fedswarm.learning.privacy import Spend  # Opacus: imported only with [privacy]

log = logging.getLogger("fedswarm.daemon")

SHUTDOWN_GRACE_S = 30.0
NETWORK_WATCH_S = 5.0
"""How often the daemon checks that its p2p thread is still running."""


def _warn_slow_placement(trainer: object) -> None:
    """Log bf16 on a CPU without native bf16: its steps can take minutes (docs/performance.md)."""
    from fedswarm.learning.cpu_precision import cpu_flags, slow_bf16_warning

    placement = getattr(trainer, "placement", None)
    if placement is None:
        return
    message = slow_bf16_warning(placement.device, placement.dtype, cpu_flags())
    if message is not None:
        log.warning("%s", message)


class Daemon:
    """Owns the daemon's parts and runs until ``request_stop`` (SIGTERM) is called."""

    def __init__(self, config: Config, identity: Identity, roster: Roster, api_token: str) -> None:
        self.config = config
        self.identity = identity
        self.roster = roster
        self.api_token = api_token
        self.events = EventBus()
        self.state = Phase.STARTING.value
        self.started_at = time.time()
        self.store: StateStore | None = None
        self.trainer: LocalTrainer | None = None
        self.screen: ScreenSummary | None = None  # [data.screen]: what the loader dropped
        self.group_privacy: GroupPrivacy | None = None  # [privacy] group_noise_multiplier
        self.round_eval: RoundEvalSets | None = None  # [eval]: sets scored after rounds
        self.node: P2PNode | None = None
        self.membership: Membership | None = None
        self.runner: RoundRunner | None = None
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
        self.adapter_exchange: AdapterExchange | None = None
        # mode = "offsite" only (docs/offsite.md): the package's transport and our role
        self.offsite: OffsiteStart | None = None

    # -- what the status view reads -------------------------------------------------------

    @property
    def progress(self) -> Progress:
        return self.runner.progress if self.runner is not None else Progress()

    @property
    def current_round(self) -> int:
        return self.progress.round

    @property
    def eval_loss_start(self) -> float | None:
        return self.progress.eval_loss_start

    @property
    def eval_loss_last(self) -> float | None:
        return self.progress.eval_loss_last

    @property
    def adapter_fingerprint(self) -> str:
        return self.progress.adapter_fingerprint

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        """Start everything, run rounds until stopped, then shut down cleanly."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            try:
                await self._start()
            except TrainingInterrupted:
                return  # stopped before the first round (a member still fetching its package)
            assert self.runner is not None
            self.notifier.ready()
            watchdog = asyncio.create_task(self._watchdog(), name="watchdog")
            network = asyncio.create_task(self._watch_network(), name="network-watch")
            round_task = asyncio.create_task(self.runner.run(), name="round-loop")
            stop_task = asyncio.create_task(self._stop.wait(), name="stop")
            await asyncio.wait({round_task, stop_task, network},
                               return_when=asyncio.FIRST_COMPLETED)
            if not network.done() and round_task.done() and round_task.exception() is None \
                    and self.config.federation.after_rounds == "serve":
                # rounds done: keep serving peers and the API until stopped (still watched)
                await asyncio.wait({stop_task, network}, return_when=asyncio.FIRST_COMPLETED)
            if network.done():
                round_task.cancel()
                stop_task.cancel()
                watchdog.cancel()
                network.result()  # raises NetworkLayerEndedError
            network.cancel()
            if round_task.done():
                error = round_task.exception()
                if error is not None:
                    raise error
            else:
                self._set_state(Phase.STOPPING)
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

    async def _watch_network(self) -> None:
        """Return (raising ``NetworkLayerEndedError``) once the p2p thread has ended by itself.

        The p2p layer runs on its own thread; an error that escapes libp2p ends that
        thread and, before this watch, left a daemon that trained and served its API
        but could reach nobody (its heartbeats logged "p2p node is not running" for
        good). Exiting non-zero lets the service manager restart it cleanly.
        """
        while True:
            await asyncio.sleep(NETWORK_WATCH_S)
            node = self.node
            if node is not None and node.ended_unexpectedly() and not self._stop.is_set():
                log.critical("the p2p layer ended unexpectedly (its error is logged above); "
                             "exiting with status 1 so the service manager restarts the "
                             "daemon (state and checkpoints are kept)")
                raise NetworkLayerEndedError("the p2p layer ended unexpectedly; see the log")

    async def _watchdog(self) -> None:
        """Ping systemd's watchdog while the event loop is alive."""
        interval = Notifier.watchdog_interval_s()
        if interval is None:
            return
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    def _spool_dir(self) -> Path:
        """Where this daemon, as a round's aggregator, spools uploads (secagg/spool.py):
        under the state directory, so a full disk there is the operator's one place to look."""
        return self.config.state_dir / "spool"

    def _mark_plan(self) -> MarkPlan | None:
        """With [ownership] enabled, this member's mark (the trainer is built once, so a
        SIGHUP roster change does not move the split of channels)."""
        plan = mark_plan(self.config, self.roster)
        if plan is not None:
            log.info("ownership mark: key %s, %d bits", plan.key.key_id, plan.settings.bits)
        return plan

    async def _start(self) -> None:
        cfg = self.config
        self.store = StateStore.open(cfg.state_dir)
        # a round's upload spool is removed when the round ends; a crash can leave one
        leftovers = remove_leftovers(self._spool_dir())
        if leftovers:
            log.info("removed %d upload spool file(s) an interrupted round left", leftovers)
        rolled_back = self.store.mark_interrupted_rounds()
        if rolled_back:
            log.warning("rounds %s were interrupted by a restart and rolled back", rolled_back)
        self._set_state(Phase.LOADING)
        self._he_pool = make_executor(max_workers=1)
        if self._uses_secure_aggregation():  # the worker starts while the model loads
            self._he_warming = asyncio.create_task(warm_up(self._he_pool), name="he-warm-up")
        if cfg.federation.mode == "offsite":
            # a member fetches the package from the owner before it can build its trainer,
            # so the node starts first (until the runner is up it only serves the package
            # and files blobs in the mailbox)
            self.node = self._make_node()
            self.offsite = OffsiteStart(cfg, self.roster, self.identity.peer_id,
                                        NodeLink(self.node), self._reject)
            await self._start_node()
            # the API comes up now, so a member's Offsite panel shows how far its package
            # fetch got (and the owner's dashboard answers while its full model loads)
            await self._start_api()
            trainer: RoundTrainer = await self.offsite.build_trainer(self._stop)
            self.runner = self._build_runner(trainer, self.store, NodeLink(self.node))
            await asyncio.to_thread(self.runner.restore)
        else:
            member_trainer = await self._member_trainer()
            self.node = self._make_node()
            self.runner = self._build_runner(member_trainer, self.store, NodeLink(self.node))
            await asyncio.to_thread(self.runner.restore)
            await self._start_node()
        self.membership = Membership(
            self.node,
            cfg.node.org,
            MembershipConfig(
                interval_s=cfg.federation.heartbeat_s,
                down_after_s=cfg.federation.peer_timeout_s,
                version=fedswarm_version(),
            ),
            on_reject=self.node.count_rejection,
        )
        self._publish_local_state()
        await self._finish_he_warm_up()  # before peers hear of us: no round on a cold worker
        await self.membership.start()
        if self._api_runner is None:
            await self._start_api()
        log.info(
            "peer %s (%s) listening on %s; API %s",
            self.identity.peer_id, cfg.node.org, ", ".join(self.node.listen_addrs), self.api_url,
        )

    async def _member_trainer(self) -> LocalTrainer:
        """Build the member's trainer off the event loop; report what its data screen
        dropped; restore its privacy spend."""
        cfg = self.config
        assert self.store is not None
        if cfg.eval.enabled:  # read (strictly) before the model loads, as config check does
            self.round_eval = await asyncio.to_thread(RoundEvalSets.load, cfg.eval)
        trainer = await asyncio.to_thread(self._build_trainer)
        self.trainer = trainer
        _warn_slow_placement(trainer)
        self.screen = await asyncio.to_thread(record_screening, cfg.state_dir,
                                              trainer.screen_result, trainer.screened_with_round)
        if trainer.privacy is not None:  # never forget, never re-spend (docs/privacy.md)
            from fedswarm.learning.privacy import Spend

            trainer.restore_privacy_spend([
                Spend(sigma, rate, steps) for steps, sigma, rate in self.store.privacy_spend()
            ])
            budget = trainer.privacy
            log.info("differential privacy: ε %.3f of %g spent (δ %.3g, noise multiplier %.3g, "
                     "sample rate %.3g)", budget.epsilon(), budget.plan.target_epsilon,
                     budget.plan.delta, budget.plan.noise_multiplier, budget.plan.sample_rate)
        return trainer

    def _build_trainer(self) -> LocalTrainer:
        """The member's trainer (blocking: it loads the model): LoRA, or FedKSeed's."""
        cfg = self.config
        if cfg.federation.mode == "fedkseed":
            from fedswarm.learning.fedkseed import KSeedTrainer

            return KSeedTrainer(cfg.model, cfg.data, cfg.train, cfg.fedkseed,
                                self.roster.federation_id, on_step=self._on_train_step)
        return LocalTrainer(
            cfg.model, cfg.lora, cfg.data, cfg.train, on_step=self._on_train_step,
            privacy=cfg.privacy, on_privacy_spend=self._on_privacy_spend,
            ownership=self._mark_plan(),
            freeze_lora_a=cfg.federation.freeze_lora_a, scaffold=cfg.federation.scaffold,
            # the quality screen scores rows under the federation's latest adapter
            screen=cfg.screen, screen_with_checkpoint=cfg.state_dir / CHECKPOINT_DIR,
            alignment=cfg.alignment,
        )

    def _make_node(self) -> P2PNode:
        return P2PNode(
            self.identity, self.roster, self._node_config(), on_blob=self._on_blob,
            on_gossip=self._on_gossip,
        )

    async def _start_node(self) -> None:
        assert self.node is not None
        await self.node.start()
        if not self.node.listen_addrs:  # py-libp2p logs the failure and carries on without one
            raise ListenError(
                f"[node] listen: cannot listen on {self.config.node.listen} (port already in "
                "use, or not an address of this machine); no peer could reach this daemon"
            )

    def _node_config(self) -> NodeConfig:
        node, fed = self.config.node, self.config.federation
        return NodeConfig(
            listen=node.listen,
            bootstrap=tuple(node.bootstrap),
            max_blob_bytes=node.max_blob_mb * 2**20,
            max_inbound_bytes=node.max_inbound_mb * 2**20,
            max_inbound_blobs_per_peer=node.max_inbound_blobs_per_peer,
            blob_timeout_s=max(fed.round_deadline_s, 30.0),
            enable_mdns=node.enable_mdns,
            mdns_interface=node.mdns_interface,
            enable_dht=node.enable_dht,
        )

    def _group_privacy(self, store: StateStore) -> GroupPrivacy:
        """Group-level DP: its budget replayed from the state, releases persisted first."""
        from fedswarm.federation.averaging.group_dp import (
            GroupPrivacy,
            group_dp_params,
            group_noise,
        )
        from fedswarm.federation.groups.plan import largest_group
        from fedswarm.learning.group_privacy import GroupBudget
        from fedswarm.secagg.params import MAX_GROUP_V3

        cfg = self.config
        noise = group_noise(cfg.privacy)
        assert noise is not None
        budget = GroupBudget(cfg.privacy.group_delta, cfg.privacy.group_target_epsilon,
                             cfg.privacy.accountant)
        for z in store.group_privacy_spend():
            budget.record(z)

        def persist(z: float) -> None:
            store.add_group_privacy_spend(self.current_round, z)

        privacy = GroupPrivacy(
            group_dp_params(cfg.federation.secure_aggregation, noise), budget,
            min(largest_group(cfg.federation.group_size), MAX_GROUP_V3),
            on_release=persist, anchor_file=cfg.state_dir / "group_dp_anchor.npy")
        log.info("group-level differential privacy: ε %.3f spent over %d rounds (δ %.3g, "
                 "noise multiplier %g, update clip %g, %d colluders)", budget.epsilon(),
                 budget.rounds, budget.delta, noise.noise_multiplier, noise.update_clip,
                 noise.colluders)
        return privacy

    def _build_runner(self, trainer: RoundTrainer, store: StateStore,
                      link: NodeLink) -> RoundRunner:
        """The federation mode's exchange and the round runner that drives it."""
        cfg = self.config
        secure = None
        if self._uses_secure_aggregation():
            secure = SecureAggregation(
                federation_id=self.roster.federation_id,
                signer=self.identity,
                verify=self._verify_member_signature,
                executor=self._he_executor,
                step_timeout_s=cfg.federation.round_deadline_s,
                protocol=cfg.federation.secure_aggregation,
                spool_dir=self._spool_dir(),
            )
        self.group_privacy = self._group_privacy(store) if cfg.privacy.group_dp else None
        # an offsite trainer is not a LocalTrainer; only the offsite exchange receives one
        parts = MemberParts(trainer=trainer, secure=secure,  # type: ignore[arg-type]
                            work_dir=cfg.state_dir, seed=cfg.train.seed,
                            group_dp=self.group_privacy)
        settings: Any = (cfg.mode_settings() if self.offsite is None
                         else self.offsite.role)
        try:
            exchange = make_exchange(cfg.federation.mode, parts, settings)
        except OwnerStateError as exc:  # the owner's own saved average: its disk, not a peer
            raise StateError(str(exc)) from None
        self.adapter_exchange = AdapterExchange(link, lambda: self.progress.published)
        return RoundRunner(MemberServices(
            me=self.identity.peer_id,
            config=cfg,
            trainer=trainer,
            store=store,
            events=self.events,
            mailbox=self.mailbox,
            link=link,
            exchange=exchange,
            adapters=self.adapter_exchange,
            view=lambda: self.membership.view() if self.membership is not None else {},
            heartbeat_interval=lambda: (self.membership.interval() if self.membership is not None
                                        else cfg.federation.heartbeat_s),
            is_member=lambda peer: self.roster.is_member(peer),
            up_members=self.up_members,
            planning_members=self.planning_members,
            set_phase=self._set_state,
            reject=self._reject,
            stopping=self._stop,
            round_eval=self.round_eval,
        ))

    def _uses_secure_aggregation(self) -> bool:
        # FedMKT uses it too: a same-tokenizer group averages its predictions securely.
        return self.config.federation.secure_aggregation != "none"

    def _he_executor(self) -> concurrent.futures.ProcessPoolExecutor:
        """The HE pool now (``_finish_he_warm_up`` replaces one whose worker failed)."""
        assert self._he_pool is not None
        return self._he_pool

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
        self._set_state(Phase.STOPPED)
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
        host, port = self.config.api.host, self.config.api.port
        site = web.TCPSite(self._api_runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ListenError(
                f"[api] port: cannot listen on {host}:{port}: {listen_problem(exc)}"
            ) from None
        port = self._api_runner.addresses[0][1] if self._api_runner.addresses else 0
        self.api_url = f"http://{self.config.api.host}:{port}"
        self._write_runtime_file()

    def _write_runtime_file(self) -> None:
        """Record where the API listens, for ``fedswarm status`` when the port is 0 (auto)."""
        path = self.config.state_dir / "api.url"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.api_url + "\n")
        os.replace(tmp, path)

    def up_members(self) -> list[str]:
        """Roster members we consider up now, including ourselves, sorted."""
        assert self.membership is not None
        # peer_timeout_s, stretched for large rosters
        return self._members_and_me(self.membership.up_peers())

    def planning_members(self) -> list[str]:
        """Roster members present for group plans (heard within three down times, so a
        late heartbeat does not reshuffle the plan), including ourselves, sorted."""
        assert self.membership is not None
        return self._members_and_me(self.membership.present_peers())

    def _members_and_me(self, peers: set[str]) -> list[str]:
        return sorted(p for p in {*peers, self.identity.peer_id} if self.roster.is_member(p))

    def _verify_member_signature(self, peer_id: str, data: bytes, signature: bytes) -> bool:
        return self.roster.is_member(peer_id) and verify_signature(peer_id, data, signature)

    # -- callbacks from the network and the trainer ------------------------------------

    async def _on_blob(self, header: BlobHeader, payload: bytes) -> None:
        """Route a blob or message by kind: heartbeats to membership, catch-up answers
        now, the rest to the mailbox."""
        if header.kind == HEARTBEAT_KIND:
            if self.membership is not None:
                await self.membership.handle_message(header.sender, payload)
            return
        if header.kind in CATCH_UP_KINDS:
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
        if header.kind in PACKAGE_KINDS:
            reason = (
                "not an offsite federation" if self.offsite is None
                else self.offsite.on_blob(header.sender, header.kind == PACKAGE_REQUEST_KIND,
                                          payload)
            )
            if reason is not None:
                self._reject(header.sender, header.kind, reason)
            return
        if header.kind not in MAILBOX_KINDS:
            self._reject(header.sender, header.kind, "unknown blob kind")
            return
        try:
            self.mailbox.put(Letter(header.sender, header.round, header.kind, payload))
        except MailboxRejected as exc:
            self._reject(header.sender, header.kind, str(exc))

    async def _on_gossip(self, topic: str, sender: str, payload: bytes) -> None:
        if self.membership is not None:
            await self.membership.handle_gossip(topic, sender, payload)

    def _on_privacy_spend(self, spend: Spend) -> None:
        """Runs in the training thread, before the steps: persist them (a crash over-counts)."""
        assert self.store is not None
        self.store.add_privacy_spend(self.current_round, spend.steps, spend.noise_multiplier,
                                     spend.sample_rate)

    def _on_train_step(self, step: int, loss: float) -> None:
        """Runs in the training thread: record the step, and stop early on shutdown."""
        if self._stop.is_set():
            raise TrainingInterrupted()
        round = self.current_round
        if self.store is not None:
            self.store.add_step_metric(round, step, loss)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(
                lambda: self.events.publish("train_step", round=round, step=step, loss=loss)
            )

    def _publish_local_state(self) -> None:
        """What our next heartbeat tells peers about us."""
        if self.membership is not None:
            self.membership.update_local(
                round=self.current_round, state=self.state, fingerprint=self.adapter_fingerprint,
                adapter_round=self.progress.published_round,
            )

    def _reject(self, peer: str | None, kind: str, reason: str) -> None:
        log.warning("rejected %s from %s: %s", kind, (peer or "?")[-8:], reason,
                    extra={"condition": f"rejected:{kind}"})
        if self.store is not None:
            self.store.add_rejection(peer, kind, reason)
        self.events.publish("rejected", peer_id=peer, kind=kind, reason=reason)

    def _set_state(self, phase: Phase) -> None:
        self.state = phase.value
        self.notifier.status(f"round {self.current_round}: {phase.value}")
        self._publish_local_state()
        self.events.publish("state", state=phase.value, round=self.current_round)
