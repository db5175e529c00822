"""Live membership view from signed heartbeats.

Each node publishes a small :class:`Heartbeat` on one topic every few seconds;
:class:`Membership` keeps ``{peer_id: PeerView}`` for the daemon's grouping
and the dashboard. Heartbeats are signed envelopes (see :mod:`.envelope`), so
sender, federation and age are already checked by the node; here we also
refuse heartbeats whose body disagrees with the envelope or is stale.

Rate: GossipSub in py-libp2p throttles each forwarding peer per topic
(``NodeConfig.gossip_max_msgs_per_s``, 200 by default here). 64 members every
``interval_s=5`` s make ~13 msg/s through every relay, far below that; a
random jitter of up to 20% keeps members from publishing in lockstep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

from .errors import GossipRejectedError, P2PError
from .framing import MAX_ROUND

log = logging.getLogger("fedswarm.p2p.membership")

#: ``on_reject(reason, peer_id, detail)``: where refused heartbeats are counted.
RejectHook = Callable[[str, str, str], None]


class HeartbeatRejectedError(GossipRejectedError):
    """A signed heartbeat this node will not believe; ``reason`` names the check.

    Reasons: ``heartbeat_invalid`` (malformed), ``heartbeat_forged`` (names another
    peer than its signer), ``heartbeat_stale`` (sent more than ``max_age_s`` ago or
    ahead: clock skew, or heartbeats GossipSub queued for us while we were away and
    delivers at once after a restart), ``heartbeat_out_of_order`` (older than one
    already seen).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


HEARTBEAT_TOPIC = "heartbeat"
_MAX_ADDRS = 8


@dataclass(frozen=True)
class Heartbeat:
    """What a peer says about itself, every few seconds."""

    peer_id: str
    org: str
    addrs: tuple[str, ...]
    round: int
    state: str
    adapter_fingerprint: str
    version: str
    sent_at: float
    adapter_round: int = -1
    """The round after which the adapter named by ``adapter_fingerprint`` was made (the
    sender's last complete round), or -1 when it has none to share. ``round`` is the
    round the sender is working on; catch-up needs to know which round the fingerprint
    belongs to, so the pair is sent explicitly. Absent in older heartbeats: -1."""

    def encode(self) -> bytes:
        doc = asdict(self)
        doc["addrs"] = list(self.addrs)
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Heartbeat:
        """Parse and type-check; :class:`GossipRejectedError` when malformed."""
        try:
            doc = json.loads(raw.decode("utf-8"))
            addrs = doc["addrs"]
            if not isinstance(addrs, list) or not all(isinstance(a, str) for a in addrs):
                raise TypeError("addrs must be a list of strings")
            hb = cls(
                peer_id=_str(doc, "peer_id"),
                org=_str(doc, "org"),
                addrs=tuple(addrs[:_MAX_ADDRS]),
                round=_int(doc, "round"),
                state=_str(doc, "state"),
                adapter_fingerprint=_str(doc, "adapter_fingerprint"),
                version=_str(doc, "version"),
                sent_at=float(doc["sent_at"]),
                adapter_round=_adapter_round(doc),
            )
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise HeartbeatRejectedError(
                "heartbeat_invalid", f"malformed heartbeat: {exc}"
            ) from exc
        return hb


def _str(doc: dict[str, object], key: str) -> str:
    value = doc[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value


def _int(doc: dict[str, object], key: str) -> int:
    value = doc[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ROUND:
        raise TypeError(f"{key} must be an integer in 0..{MAX_ROUND}")
    return value


def _adapter_round(doc: dict[str, object]) -> int:
    if doc.get("adapter_round", -1) == -1:
        return -1
    return _int(doc, "adapter_round")


@dataclass
class PeerView:
    """The latest known state of one peer."""

    last_seen: float
    latency_ms: float | None
    round: int
    state: str
    fingerprint: str
    addrs: tuple[str, ...]
    up: bool = True
    org: str = ""
    version: str = ""
    adapter_round: int = -1  # the round ``fingerprint`` belongs to; -1: none advertised


class _Node(Protocol):
    """The part of P2PNode that membership uses (keeps this module testable)."""

    @property
    def peer_id(self) -> str: ...

    @property
    def listen_addrs(self) -> list[str]: ...

    async def publish(self, topic: str, payload: bytes) -> None: ...

    async def subscribe(self, topic: str) -> None: ...

    def latency_ms(self, peer_id: str) -> float | None: ...

    def add_peer_addrs(self, peer_id: str, addrs: list[str] | tuple[str, ...]) -> None: ...


@dataclass
class MembershipConfig:
    interval_s: float = 5.0
    max_age_s: float = 60.0  # heartbeats older than this are refused
    down_after_s: float = 20.0  # a peer is "up" if heard from within this
    version: str = "0"


@dataclass
class _LocalState:
    round: int = 0
    state: str = "idle"
    adapter_fingerprint: str = ""
    adapter_round: int = -1


class Membership:
    """Publishes our heartbeats and folds peers' heartbeats into a live view.

    Wire it to the node: pass :meth:`handle_gossip` (or call it from the
    daemon's ``on_gossip`` for ``HEARTBEAT_TOPIC``), then ``await start()``.
    """

    def __init__(
        self,
        node: _Node,
        org: str,
        config: MembershipConfig | None = None,
        *,
        on_reject: RejectHook | None = None,
    ) -> None:
        self._node = node
        self._on_reject = on_reject
        self._org = org
        self.config = config or MembershipConfig()
        self._local = _LocalState()
        self._view: dict[str, PeerView] = {}
        self._task: asyncio.Task[None] | None = None
        self.rejected = 0

    def update_local(
        self,
        *,
        round: int | None = None,
        state: str | None = None,
        fingerprint: str | None = None,
        adapter_round: int | None = None,
    ) -> None:
        """Change what our next heartbeat says (``adapter_round``: the fingerprint's round)."""
        if round is not None:
            self._local.round = round
        if state is not None:
            self._local.state = state
        if fingerprint is not None:
            self._local.adapter_fingerprint = fingerprint
        if adapter_round is not None:
            self._local.adapter_round = adapter_round

    def heartbeat(self) -> Heartbeat:
        return Heartbeat(
            peer_id=self._node.peer_id,
            org=self._org,
            addrs=tuple(self._node.listen_addrs[:_MAX_ADDRS]),
            round=self._local.round,
            state=self._local.state,
            adapter_fingerprint=self._local.adapter_fingerprint,
            version=self.config.version,
            sent_at=time.time(),
            adapter_round=self._local.adapter_round,
        )

    async def start(self) -> None:
        await self._node.subscribe(HEARTBEAT_TOPIC)
        self._task = asyncio.create_task(self._run(), name="fedswarm-membership")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def publish_now(self) -> None:
        await self._node.publish(HEARTBEAT_TOPIC, self.heartbeat().encode())

    async def _run(self) -> None:
        while True:
            try:
                await self.publish_now()
            except P2PError as exc:
                log.warning("heartbeat not published: %s", exc)
            jitter = random.uniform(0.8, 1.2)
            await asyncio.sleep(self.config.interval_s * jitter)

    async def handle_gossip(self, topic: str, sender: str, payload: bytes) -> None:
        """``on_gossip`` callback: folds heartbeats in, ignores other topics."""
        if topic != HEARTBEAT_TOPIC:
            return
        try:
            self.accept(sender, payload)
        except GossipRejectedError as exc:
            self.rejected += 1
            reason = exc.reason if isinstance(exc, HeartbeatRejectedError) else "heartbeat_invalid"
            if self._on_reject is not None:
                self._on_reject(reason, sender, str(exc))
            # One condition per reason: a burst of stale heartbeats after a restart
            # must not hide a forged one in the log's once-a-minute summary. Older than
            # one seen is normal (GossipSub delivers what it queued for a restarted
            # peer, dozens at once): counted, logged at debug only.
            level = logging.DEBUG if reason == "heartbeat_out_of_order" else logging.WARNING
            log.log(level, "heartbeat from %s refused: %s", sender, exc,
                    extra={"condition": reason})

    def accept(self, sender: str, payload: bytes, now: float | None = None) -> Heartbeat:
        """Validate one heartbeat (already signature-checked by the node)."""
        hb = Heartbeat.decode(payload)
        now = time.time() if now is None else now
        if hb.peer_id != sender:
            raise HeartbeatRejectedError(
                "heartbeat_forged", f"heartbeat names {hb.peer_id} but was signed by {sender}"
            )
        if not (now - self.config.max_age_s <= hb.sent_at <= now + self.config.max_age_s):
            raise HeartbeatRejectedError(
                "heartbeat_stale",
                f"heartbeat is stale (sent_at={hb.sent_at:.0f}, {now - hb.sent_at:.0f} s ago)",
            )
        current = self._view.get(sender)
        if current is not None and hb.sent_at < current.last_seen:
            raise HeartbeatRejectedError(
                "heartbeat_out_of_order", "heartbeat older than one already seen"
            )
        self._view[sender] = PeerView(
            last_seen=hb.sent_at,
            latency_ms=self._node.latency_ms(sender),
            round=hb.round,
            state=hb.state,
            fingerprint=hb.adapter_fingerprint,
            addrs=hb.addrs,
            up=True,
            org=hb.org,
            version=hb.version,
            adapter_round=hb.adapter_round,
        )
        self._node.add_peer_addrs(sender, hb.addrs)
        return hb

    def view(self, now: float | None = None) -> dict[str, PeerView]:
        """A snapshot of every peer ever heard from, with ``up`` recomputed."""
        now = time.time() if now is None else now
        out: dict[str, PeerView] = {}
        for pid, v in self._view.items():
            out[pid] = PeerView(
                **{**asdict(v), "up": now - v.last_seen <= self.config.down_after_s}
            )
        return out

    def up_peers(self, timeout_s: float | None = None, now: float | None = None) -> set[str]:
        """Peers heard from within ``timeout_s`` (default ``down_after_s``)."""
        now = time.time() if now is None else now
        limit = self.config.down_after_s if timeout_s is None else timeout_s
        return {pid for pid, v in self._view.items() if now - v.last_seen <= limit}


__all__ = [
    "HEARTBEAT_TOPIC",
    "Heartbeat",
    "HeartbeatRejectedError",
    "Membership",
    "MembershipConfig",
    "PeerView",
]
