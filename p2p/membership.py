"""Live membership view from signed heartbeats.

Each node tells every member it is connected to a small :class:`Heartbeat` every few
seconds; :class:`Membership` keeps ``{peer_id: PeerView}`` for the daemon's grouping
and the dashboard. A heartbeat arrives either as a message on the member's long-lived
message stream (signed header: sender and federation checked by the node) or, every
``gossip_every_s``, as a signed GossipSub envelope, which also reaches members this
node has no link to. Here we also refuse heartbeats whose body disagrees with the
signer or is stale.

Why direct messages and not gossip every beat: each GossipSub delivery in py-libp2p
costs milliseconds of CPU and reaches a member from several mesh peers, and queued
deliveries on a starved machine arrived 1-5 minutes late; 32 members gossiping every
6 s saturated two cores (docs/reliability.md). A direct message is one copy, and a
member whose stream is still busy is skipped rather than queued for.

Rate: a member receives ``(members - 1) / interval`` heartbeats a second. Above
``max_received_per_s`` the interval and the down-after time stretch in proportion
(:meth:`Membership.pace`), so a large federation costs each member a bounded rate;
a change of round or state still goes out at once (at most once per ``interval_s``).
A random jitter of up to 20% keeps members from beating in lockstep.
"""

from __future__ import annotations

import asyncio
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
    already seen: :meth:`Membership.accept` raises it, but the handlers drop such a
    copy without counting a refusal, since a beat travels two ways).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


HEARTBEAT_TOPIC = "heartbeat"
HEARTBEAT_KIND = "heartbeat"
"""The message kind a heartbeat travels as on a member's message stream."""
_MAX_ADDRS = 8

PRESENT_FOR_DOWN_TIMES = 3.0
"""A member stays *present* (in group plans) this many down times after its last heartbeat.

Why longer than "up": plans are computed by each member from its own view, and one member
more or less reshuffles the whole grid. Under load (32 daemons on two cores) heartbeats
arrive late and views said 9 to 31 members up at one moment, so every plan differed and
every invitation was refused. A member that is late but present keeps its place in
everyone's plan; a leader stops waiting for invitees it sees down from half its window on
(``federation.groups.agreement``)."""


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

    @property
    def member_count(self) -> int: ...

    async def publish(self, topic: str, payload: bytes) -> None: ...

    async def send_to_connected(
        self, kind: str, round: int, payload: bytes, *, timeout: float | None = None
    ) -> int: ...

    async def subscribe(self, topic: str) -> None: ...

    def latency_ms(self, peer_id: str) -> float | None: ...

    def add_peer_addrs(self, peer_id: str, addrs: list[str] | tuple[str, ...]) -> None: ...


@dataclass
class MembershipConfig:
    interval_s: float = 5.0
    max_age_s: float = 60.0  # heartbeats older than this are refused
    down_after_s: float = 20.0  # a peer is "up" if heard from within this
    version: str = "0"
    max_received_per_s: float = 8.0
    """The most heartbeats a member receives a second, all members together. With more
    than ``max_received_per_s * interval_s`` other members (16 at the daemon's 2 s),
    :meth:`Membership.pace` stretches the interval and ``down_after_s`` alike."""
    gossip_every_s: float = 30.0
    """A heartbeat also goes out by GossipSub this often: relays carry it to members
    this node has no link to."""

    @property
    def write_timeout_s(self) -> float:
        """How long one beat's write to one member may take: half of ``max_age_s``, so a
        beat that got through is still young enough to be accepted (see
        :meth:`Membership.publish_now`)."""
        return self.max_age_s / 2


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
        self._changed = asyncio.Event()
        self.rejected = 0
        self.superseded = 0  # older copies of a heartbeat already seen: dropped, not refused

    def update_local(
        self,
        *,
        round: int | None = None,
        state: str | None = None,
        fingerprint: str | None = None,
        adapter_round: int | None = None,
    ) -> None:
        """Change what our next heartbeat says (``adapter_round``: the fingerprint's round).

        A new round or state is sent at once (at most once per ``interval_s``), not at
        the next, possibly stretched, beat. Call on the event loop Membership runs on.
        """
        local = self._local
        if (round is not None and round != local.round) or (
            state is not None and state != local.state
        ):
            self._changed.set()
        if round is not None:
            local.round = round
        if state is not None:
            local.state = state
        if fingerprint is not None:
            local.adapter_fingerprint = fingerprint
        if adapter_round is not None:
            local.adapter_round = adapter_round

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

    def pace(self) -> float:
        """How many times ``interval_s`` and ``down_after_s`` are stretched (>= 1): the
        factor that keeps the heartbeats a member receives within ``max_received_per_s``."""
        others = max(self._node.member_count - 1, 0)
        budget = self.config.max_received_per_s * self.config.interval_s
        return max(1.0, others / budget) if budget > 0 else 1.0

    def interval(self) -> float:
        """Seconds between our heartbeats now (``interval_s`` stretched by :meth:`pace`)."""
        return self.config.interval_s * self.pace()

    def down_after(self) -> float:
        """A member not heard from for this long is down (``down_after_s`` × :meth:`pace`)."""
        return self.config.down_after_s * self.pace()

    async def start(self) -> None:
        await self._node.subscribe(HEARTBEAT_TOPIC)
        self._task = asyncio.create_task(self._run(), name="fedswarm-membership")

    async def stop(self) -> None:
        """End the beat loop and wait for it; a cancel of the caller still propagates."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    async def publish_now(self, *, gossip: bool = True) -> None:
        """Send our heartbeat to every connected member now; ``gossip``: also publish it.

        A write may take up to half of ``max_age_s``: opening a member's message stream
        (once; later beats reuse it) took longer than a beat interval among 32 daemons
        on 2 cores, and a write cut at the interval dropped the half-open stream, so the
        next beat started over and none got through (747 of 1 012 writes failed). A
        member still being written to is skipped by later beats meanwhile.
        """
        payload = self.heartbeat().encode()
        try:
            await self._node.send_to_connected(
                HEARTBEAT_KIND, self._local.round, payload, timeout=self.config.write_timeout_s
            )
        except P2PError as exc:
            log.warning("heartbeat not sent: %s", exc)
        if gossip:
            try:
                await self._node.publish(HEARTBEAT_TOPIC, payload)
            except P2PError as exc:
                log.warning("heartbeat not published: %s", exc)

    async def _run(self) -> None:
        next_gossip = 0.0
        while True:
            now = time.monotonic()
            gossip = now >= next_gossip
            if gossip:
                next_gossip = now + self.config.gossip_every_s
            self._changed.clear()
            beat_at = now
            await self.publish_now(gossip=gossip)
            # Not asyncio.wait_for: on Python 3.11 it swallows a cancel that arrives as
            # the event is set — exactly shutdown (state "stopped", then stop()) — and
            # the daemon then never exited on SIGTERM.
            try:
                async with asyncio.timeout(self.interval() * random.uniform(0.8, 1.2)):
                    await self._changed.wait()
            except TimeoutError:
                continue
            # a change of round or state: out now, but not sooner than interval_s
            await asyncio.sleep(max(0.0, self.config.interval_s - (time.monotonic() - beat_at)))

    async def handle_gossip(self, topic: str, sender: str, payload: bytes) -> None:
        """``on_gossip`` callback: folds heartbeats in, ignores other topics."""
        if topic == HEARTBEAT_TOPIC:
            self._fold(sender, payload)

    async def handle_message(self, sender: str, payload: bytes) -> None:
        """A ``HEARTBEAT_KIND`` message from ``sender`` (its signed header checked)."""
        self._fold(sender, payload)

    def _fold(self, sender: str, payload: bytes) -> None:
        try:
            self.accept(sender, payload)
        except HeartbeatRejectedError as exc:
            if exc.reason == "heartbeat_out_of_order":
                # Normal with two paths: the gossip copy of a beat arriving after the
                # next direct one, or GossipSub's replay to a restarted peer. Not a refusal.
                self.superseded += 1
                return
            self._refuse(sender, exc.reason, exc)
        except GossipRejectedError as exc:
            self._refuse(sender, "heartbeat_invalid", exc)

    def _refuse(self, sender: str, reason: str, exc: Exception) -> None:
        self.rejected += 1
        if self._on_reject is not None:
            self._on_reject(reason, sender, str(exc))
        # One condition per reason: a burst of stale heartbeats after a restart must not
        # hide a forged one in the log's once-a-minute summary.
        log.warning("heartbeat from %s refused: %s", sender, exc, extra={"condition": reason})

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
        down_after = self.down_after()
        for pid, v in self._view.items():
            out[pid] = PeerView(**{**asdict(v), "up": now - v.last_seen <= down_after})
        return out

    def present_after(self) -> float:
        """A member not heard from for this long leaves group plans
        (:data:`PRESENT_FOR_DOWN_TIMES` × :meth:`down_after`)."""
        return PRESENT_FOR_DOWN_TIMES * self.down_after()

    def present_peers(self, now: float | None = None) -> set[str]:
        """Peers heard from within :meth:`present_after`: whom group plans count."""
        return self.up_peers(self.present_after(), now)

    def up_peers(self, timeout_s: float | None = None, now: float | None = None) -> set[str]:
        """Peers heard from within ``timeout_s`` (default :meth:`down_after`)."""
        now = time.time() if now is None else now
        limit = self.down_after() if timeout_s is None else timeout_s
        return {pid for pid, v in self._view.items() if now - v.last_seen <= limit}


__all__ = [
    "HEARTBEAT_KIND",
    "HEARTBEAT_TOPIC",
    "PRESENT_FOR_DOWN_TIMES",
    "Heartbeat",
    "HeartbeatRejectedError",
    "Membership",
    "MembershipConfig",
    "PeerView",
]
