"""Gossip: small signed messages over GossipSub, checked twice, delivered once.

GossipSub signs messages with the libp2p key, which proves who published but not
for which federation, topic or moment. Every payload therefore travels in a signed
envelope (:mod:`.envelope`). The envelope is checked by GossipSub's validator, so
an invalid message is neither delivered nor forwarded to the rest of the mesh, and
again on delivery, because the roster may have changed in between. A replay of a
message already delivered (same signature) is dropped.

Topics are namespaced per federation (``fedswarm/<federation id>/<topic>``). One
internal topic carries each member's signed listen addresses, so members that know
only a bootstrap peer find each other; what it teaches goes to
:meth:`.connections.Connections.add_peer_addrs`, never to the daemon.

Only the trio thread touches the pubsub objects; the daemon's ``on_gossip`` runs on
its asyncio loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pubsub import Pubsub

from .config import NodeConfig
from .context import NodeContext
from .envelope import MAX_GOSSIP_PAYLOAD, GossipEnvelope, open_envelope, seal
from .errors import GossipRejectedError
from .pubsub_records import install as install_record_cache
from .streams import reset_stream

# The logger of P2PNode before it was split into modules: log filters keep matching.
log = logging.getLogger("fedswarm.p2p.node")

GossipHandler = Callable[[str, str, bytes], Awaitable[None]]

ANNOUNCE_TOPIC = "_fedswarm_addrs"
# Signatures of delivered messages remembered to drop replays.
_SEEN_CACHE = 4096


GOSSIP_MALFORMED = "gossip_malformed"
"""Refusal reason: a pubsub stream carried bytes that are not a pubsub RPC."""

RejectHook = Callable[[str, str | None, str], None]


def build_pubsub(
    host: IHost, config: NodeConfig, reject: RejectHook | None = None
) -> tuple[Pubsub, GossipSub]:
    """GossipSub v1.1 with a mesh sized for a consortium, and its pubsub front.

    Each peer's signed peer record is checked once, not on every RPC
    (:mod:`.pubsub_records`).

    Must be called on the trio thread; both are started by :mod:`.runtime`.
    ``reject(reason, peer, detail)`` counts a malformed pubsub stream.
    """
    install_record_cache()
    gossipsub = GossipSub(
        [PROTOCOL_ID_V11],
        # Each member receives every message from up to `degree` mesh peers; 6/4/12
        # (the spec's defaults) cost 32 idle members on 2 cores more than 4/3/6 with the
        # same delivery (bench.idle_mesh; docs/reliability.md). log4(64) = 3 hops.
        degree=4,
        degree_low=3,
        degree_high=6,
        heartbeat_interval=1,
        max_messages_per_topic_per_second=config.gossip_max_msgs_per_s,
    )
    pubsub = Pubsub(host, gossipsub)
    guard_pubsub_streams(host, pubsub, reject or (lambda reason, peer, detail: None))
    return pubsub, gossipsub


def guard_pubsub_streams(host: IHost, pubsub: Pubsub, reject: RejectHook) -> None:
    """Put pubsub's stream handler behind one that keeps a bad stream to that stream.

    py-libp2p 0.8.1's ``Pubsub.stream_handler`` catches its own stream and parse errors
    but not protobuf's ``DecodeError``: one frame that is not a pubsub RPC, from any
    connected peer, went up through the connection's nursery into the swarm's service
    manager and ended the node's whole trio thread — the daemon stayed up without a
    network ("p2p node is not running") until restarted by hand. Seen among 16 daemons
    on a loaded box (a connection reset mid-frame); a hostile member could send such a
    frame on purpose. Now the stream is reset, the peer is dropped from pubsub's
    records as py-libp2p does for its own read errors (its next stream starts afresh),
    and the refusal is counted as ``gossip_malformed``.
    """

    async def handle(stream: INetStream) -> None:
        try:
            await pubsub.stream_handler(stream)
        except Exception as exc:
            peer = stream.muxed_conn.peer_id
            log.warning("pubsub stream from %s refused: %s: %s", peer, type(exc).__name__, exc,
                        extra={"condition": GOSSIP_MALFORMED})
            reject(GOSSIP_MALFORMED, str(peer), f"{type(exc).__name__}: {exc}")
            await reset_stream(stream)
            with contextlib.suppress(Exception):
                pubsub._handle_dead_peer(peer)

    for protocol in pubsub.router.get_protocols():
        host.set_stream_handler(protocol, handle)


class Gossip:
    """Publishing, subscribing and checking signed gossip for one node."""

    def __init__(
        self,
        ctx: NodeContext,
        *,
        on_gossip: GossipHandler,
        learn_addrs: Callable[[str, list[str]], None],
    ) -> None:
        self._ctx = ctx
        self._on_gossip = on_gossip
        self._learn_addrs = learn_addrs
        # trio-thread-only state
        self._subscribed: set[str] = set()
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def seal(self, topic: str, payload: bytes) -> bytes:
        """The signed envelope for ``payload`` on ``topic``; any thread.

        Raises :class:`GossipRejectedError` above ``MAX_GOSSIP_PAYLOAD``: gossip is
        copied to every member through the mesh, large payloads go as blobs.
        """
        if len(payload) > MAX_GOSSIP_PAYLOAD:
            raise GossipRejectedError(
                f"gossip payload is {len(payload)} bytes, limit {MAX_GOSSIP_PAYLOAD}; use send_blob"
            )
        return seal(self._ctx.identity, self._ctx.roster.federation_id, topic, payload)

    # trio thread ----------------------------------------------------------------------

    def _topic(self, topic: str) -> str:
        return f"fedswarm/{self._ctx.roster.federation_id}/{topic}"

    async def publish(self, topic: str, data: bytes, count: bool = True) -> None:
        """Publish an already sealed envelope; ``count`` adds it to ``gossip_published``."""
        assert self._ctx.handles.pubsub is not None
        await self._ctx.handles.pubsub.publish(self._topic(topic), data)
        if count:
            self._ctx.counters.add("gossip_published", 1)

    async def subscribe(self, topic: str) -> None:
        """Validate and deliver messages on ``topic`` from now on (idempotent)."""
        pubsub = self._ctx.handles.pubsub
        assert pubsub is not None and self._ctx.handles.nursery is not None
        if topic in self._subscribed:
            return
        self._subscribed.add(topic)
        full = self._topic(topic)
        pubsub.set_topic_validator(full, lambda _peer, msg: self._validate(topic, msg), False)
        subscription = await pubsub.subscribe(full)
        self._ctx.handles.nursery.start_soon(self._read_topic, topic, subscription)

    async def announce_addrs(self, listen_addrs: list[str]) -> None:
        """Publish our dialable addresses on the internal topic (if enabled); never raises."""
        if listen_addrs and self._ctx.config.announce_addrs:
            data = seal(
                self._ctx.identity,
                self._ctx.roster.federation_id,
                ANNOUNCE_TOPIC,
                json.dumps({"addrs": listen_addrs}).encode(),
            )
            try:
                await self.publish(ANNOUNCE_TOPIC, data, count=False)
            except Exception:
                log.debug("address announcement failed", exc_info=True)

    def _open_member_envelope(self, topic: str, data: bytes) -> GossipEnvelope | None:
        """The envelope if it is valid for this federation and topic and signed by a
        member; otherwise None, with the rejection counted."""
        try:
            env = open_envelope(
                data,
                federation_id=self._ctx.roster.federation_id,
                topic=topic,
                max_age_s=self._ctx.config.gossip_max_age_s,
            )
        except GossipRejectedError as exc:
            log.warning("rejected gossip on %s: %s", topic, exc)
            self._ctx.counters.reject("gossip_invalid", None, f"{topic}: {exc}")
            return None
        if not self._ctx.roster.is_member(env.sender):
            self._ctx.counters.reject("gossip_not_member", env.sender, f"gossip on {topic}")
            return None
        return env

    def _validate(self, topic: str, msg: Any) -> bool:
        """GossipSub validator: invalid messages are neither delivered nor forwarded."""
        env = self._open_member_envelope(topic, msg.data)
        if env is None:
            return False
        try:
            originator = str(ID(msg.from_id))
        except Exception:
            originator = ""
        if originator != env.sender:
            self._ctx.counters.reject("gossip_invalid")
            return False
        return True

    async def _read_topic(self, topic: str, subscription: Any) -> None:
        while True:
            msg = await subscription.get()
            # Checked again on delivery: the roster may have changed since validation.
            env = self._open_member_envelope(topic, msg.data)
            if env is None or env.sender == self._ctx.me:
                continue
            key = hashlib.sha256(env.signature).digest()
            if key in self._seen:
                self._ctx.counters.reject("gossip_replay")
                continue
            self._seen[key] = env.sent_at
            while len(self._seen) > _SEEN_CACHE:
                self._seen.popitem(last=False)
            if topic == ANNOUNCE_TOPIC:
                self._learn_announced(env.sender, env.payload)
                continue
            self._ctx.counters.add("gossip_received", 1)
            asyncio.run_coroutine_threadsafe(
                self._deliver(topic, env.sender, env.payload), self._ctx.handles.require_loop()
            )

    def _learn_announced(self, sender: str, payload: bytes) -> None:
        try:
            addrs = json.loads(payload)["addrs"]
            if isinstance(addrs, list):
                self._learn_addrs(sender, [a for a in addrs if isinstance(a, str)])
        except (ValueError, KeyError, TypeError):
            self._ctx.counters.reject("gossip_invalid")

    async def _deliver(self, topic: str, sender: str, payload: bytes) -> None:
        """Runs on the asyncio loop: a failing handler is logged, never fatal."""
        try:
            await self._on_gossip(topic, sender, payload)
        except Exception:
            log.exception("gossip handler failed for topic %s from %s", topic, sender)
