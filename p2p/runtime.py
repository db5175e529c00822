"""Wiring: the node's parts, their start-up on the trio thread, the periodic loops.

:class:`NodeRuntime` builds the parts (connections, ping, gossip, blob sender and
receiver) and hands each the others' methods it needs, so no part imports another's
state. On the trio thread, start-up then builds the libp2p host (Noise + Yamux only,
:mod:`.host`), GossipSub and the message streams, optionally mDNS bound to one
interface and the Kademlia DHT; registers the stream handlers and the connection
notifee; and returns to ``P2PNode.start()`` only once the node listens and is
subscribed to the address topic, so a started node can be dialled and can gossip at
once. Everything it builds is published in :class:`~.context.NodeHandles` in that
order.

Then two loops keep the federation connected without the daemon's help: the
maintenance loop re-dials members (:mod:`.connections`), announces our addresses
(a burst, then a slow refresh: :mod:`.announce_schedule`) and pings members
(:mod:`.ping`); with the DHT on, the DHT loop publishes our
signed record and looks up members we cannot reach. All of this runs on the trio
thread, the only one that touches libp2p objects (:mod:`.trio_bridge`).
"""

from __future__ import annotations

from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.custom_types import TProtocol
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from . import framing
from .announce_schedule import AnnounceSchedule
from .blob_receiver import BlobHandler, BlobReceiver
from .blob_sender import BlobSender
from .connections import ConnectionNotifee, Connections, is_dialable
from .context import NodeContext
from .dht import DhtDiscovery
from .gossip import ANNOUNCE_TOPIC, Gossip, GossipHandler, build_pubsub
from .host import build_host
from .mdns import InterfaceMdnsDiscovery
from .message_streams import MESSAGE_PROTOCOL, MessageStreams
from .ping import PING_PROTOCOL, Pinger


class NodeRuntime:
    """Wires the node's parts to each other, then (on the trio thread) to libp2p.

    The parts exist from construction on, so what asyncio may read before the
    node starts (connected peers, learned addresses, latencies, inbound
    counters) is already there; what needs libp2p waits for :meth:`main`.
    """

    def __init__(self, ctx: NodeContext, *, on_blob: BlobHandler, on_gossip: GossipHandler) -> None:
        self._ctx = ctx
        self.connections = Connections(ctx)
        self.pinger = Pinger(ctx, close_peer=self.connections.close_peer)
        self.gossip = Gossip(ctx, on_gossip=on_gossip, learn_addrs=self.connections.add_peer_addrs)
        self.sender = BlobSender(ctx, ensure_connected=self.connections.ensure_connected)
        self.receiver = BlobReceiver(ctx, on_blob=on_blob)
        # Full multiaddrs with /p2p/<id>; set once listening, read from asyncio.
        self.listen_addrs: list[str] = []

    async def main(self, nursery: trio.Nursery) -> None:
        """``TrioThread.start``'s entry point: returns once the node is serving."""
        await nursery.start(self._serve)

    # start-up -------------------------------------------------------------------------

    async def _serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self._ctx.config
        # With an interface named, mDNS is ours (bound to it, started below);
        # without one, py-libp2p's own, which listens on every interface.
        bound_mdns = cfg.enable_mdns and bool(cfg.mdns_interface)
        host, pubsub, gossipsub = self._build(enable_mdns=cfg.enable_mdns and not bound_mdns)
        mdns = await self._open_bound_mdns(host) if bound_mdns else None
        try:
            async with host.run([multiaddr.Multiaddr(cfg.listen)]):
                self._register_handlers(host)
                self.listen_addrs = [str(a) for a in host.get_addrs()]
                async with background_trio_service(pubsub), background_trio_service(gossipsub):
                    await pubsub.wait_until_ready()
                    async with trio.open_nursery() as inner:
                        await self._start_tasks(host, inner, mdns)
                        task_status.started()
                        await trio.sleep_forever()
        finally:
            if mdns is not None:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(mdns.stop)

    def _build(self, *, enable_mdns: bool) -> tuple[IHost, Pubsub, GossipSub]:
        """Host, pubsub and message streams, published in ``handles`` (not yet running)."""
        cfg = self._ctx.config
        host = build_host(
            self._ctx.identity,
            [cfg.listen],
            enable_mdns=enable_mdns,
            on_refused=self._ctx.counters.reject,
        )
        pubsub, gossipsub = build_pubsub(host, cfg, self._ctx.counters.reject)
        self._ctx.handles.host, self._ctx.handles.pubsub = host, pubsub
        self._ctx.handles.messages = MessageStreams(
            host,
            self._ctx.me,
            self._ctx.current_roster,
            max_message_bytes=cfg.max_message_bytes,
            body_timeout_s=cfg.blob_timeout_s,
            deliver=self.receiver.hand_to_daemon,
            count_reject=self._ctx.counters.reject,
            add_stat=self._ctx.counters.add,
            heard=self.pinger.heard,
        )
        return host, pubsub, gossipsub

    async def _open_bound_mdns(self, host: IHost) -> InterfaceMdnsDiscovery:
        interface = self._ctx.config.mdns_interface
        assert interface is not None
        # Zeroconf opens its sockets and starts its own thread: seconds, off trio.
        return await trio.to_thread.run_sync(lambda: InterfaceMdnsDiscovery(host, interface))

    def _register_handlers(self, host: IHost) -> None:
        messages = self._ctx.handles.messages
        assert messages is not None
        host.get_network().register_notifee(ConnectionNotifee(self.connections))
        host.set_stream_handler(TProtocol(framing.BLOB_PROTOCOL), self.receiver.handle_stream)
        host.set_stream_handler(TProtocol(PING_PROTOCOL), self.pinger.handle_stream)
        host.set_stream_handler(TProtocol(MESSAGE_PROTOCOL), messages.handle)

    async def _start_tasks(
        self, host: IHost, inner: trio.Nursery, mdns: InterfaceMdnsDiscovery | None
    ) -> None:
        """Open for business: address topic, maintenance, mDNS and DHT, in that order."""
        self._ctx.handles.nursery = inner
        await self.gossip.subscribe(ANNOUNCE_TOPIC)
        inner.start_soon(self._maintenance_loop)
        if mdns is not None:
            await trio.to_thread.run_sync(mdns.start)
            inner.start_soon(mdns.cleanup_loop)
        if self._ctx.config.enable_dht:
            dht = DhtDiscovery(
                host,
                self._ctx.identity,
                self._ctx.current_roster,
                learn=self.connections.add_peer_addrs,
                reject=self._ctx.counters.reject,
                max_age_s=self._ctx.config.dht_record_max_age_s,
            )
            self._ctx.handles.dht = dht
            await inner.start(dht.run)
            inner.start_soon(self._dht_loop, dht)

    # background loops -----------------------------------------------------------------

    def _dialable_listen_addrs(self) -> list[str]:
        return [a for a in self.listen_addrs if is_dialable(a)]

    async def _maintenance_loop(self) -> None:
        """Keep members connected, announce our addresses, measure latency."""
        config = self._ctx.config
        announce = AnnounceSchedule(config.announce_interval_s, config.announce_burst,
                                    config.announce_refresh_s)
        next_ping = 0.0
        while True:
            now = trio.current_time()
            self.connections.reconcile()
            self.connections.reconnect_members(now)
            nursery = self._ctx.handles.require_nursery()
            addrs = self._dialable_listen_addrs()
            if announce.due(now, addrs):
                nursery.start_soon(self.gossip.announce_addrs, addrs)
            if now >= next_ping:
                next_ping = now + config.ping_interval_s
                nursery.start_soon(self.pinger.ping_all, self.connections.connected_peers())
            await trio.sleep(config.maintenance_interval_s)

    async def _dht_loop(self, dht: DhtDiscovery) -> None:
        """Publish our signed record and look up members we are not connected to."""
        me = self._ctx.me
        while True:
            await dht.add_members(self.connections.connected_peers())
            await dht.publish(self._dialable_listen_addrs())
            # Members we cannot reach, and members we reach only through an
            # address nobody signed (libp2p's auto-connector dials whatever
            # Kademlia routing put into the peerstore): fetch their own record.
            signed = self.connections.peers_with_known_addrs()
            missing = [
                m.peer_id
                for m in self._ctx.roster.members
                if m.peer_id != me
                and (
                    not self.connections.is_connected(m.peer_id)
                    or (m.peer_id not in signed and not m.addrs)
                )
            ]
            async with trio.open_nursery() as nursery:
                for pid in missing:
                    nursery.start_soon(dht.lookup, pid)
            await trio.sleep(self._ctx.config.dht_interval_s)
