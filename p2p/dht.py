"""Opt-in Kademlia DHT discovery of roster members' addresses.

A member that knows only one other member normally learns everyone else from
the signed address announcements on gossip. The DHT is a second path that
does not need a GossipSub mesh: every member stores a *signed address record*
under ``/fedswarm/<peer id>/<federation id>`` and looks up the records of
roster members it is not connected to.

Why signed records instead of ``find_peer``: Kademlia's peer routing answers
with addresses that any DHT node may have made up. A record here is a gossip
envelope (:mod:`.envelope`) signed by the member itself and bound to the
federation, a dedicated topic and a timestamp; the DHT's validator (run on
every PUT we receive and on every GET answer) drops records that are forged,
stale, for another federation, signed by someone other than the key's peer,
or signed by a non-member. Only the trio thread touches this module's objects.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.records.validator import NamespacedValidator, Validator
from libp2p.tools.anyio_service import background_trio_service

from .envelope import open_envelope, seal
from .errors import GossipRejectedError, P2PError
from .identity import Identity
from .roster import Roster

log = logging.getLogger("fedswarm.p2p.dht")

NAMESPACE = "fedswarm"
RECORD_TOPIC = "_fedswarm_dht_addrs"
_MAX_ADDRS = 8
_QUERY_TIMEOUT_S = 10.0


class DhtRecordError(P2PError):
    """A DHT address record failed a check (signature, roster, key, age, shape)."""


def record_key(peer_id: str, federation_id: str) -> str:
    """The DHT key under which ``peer_id`` publishes its addresses."""
    return f"/{NAMESPACE}/{peer_id}/{federation_id}"


def make_record(identity: Identity, federation_id: str, addrs: list[str]) -> bytes:
    """A signed address record for our own peer id."""
    payload = json.dumps({"addrs": addrs[:_MAX_ADDRS]}).encode()
    return seal(identity, federation_id, RECORD_TOPIC, payload)


def parse_record(
    key: str, value: bytes, roster: Roster, max_age_s: float
) -> tuple[str, float, list[str]]:
    """Check one record; returns (peer id, sent_at, addrs) or raises DhtRecordError."""
    prefix = f"/{NAMESPACE}/"
    if not key.startswith(prefix) or key.count("/") < 3:
        raise DhtRecordError(f"not a fedswarm address key: {key!r}")
    peer_id, federation_id = key[len(prefix) :].split("/", 1)
    if federation_id != roster.federation_id:
        raise DhtRecordError(f"record is for federation {federation_id!r}")
    try:
        env = open_envelope(
            value, federation_id=roster.federation_id, topic=RECORD_TOPIC, max_age_s=max_age_s
        )
    except GossipRejectedError as exc:
        raise DhtRecordError(f"record for {peer_id}: {exc}") from exc
    if env.sender != peer_id:
        raise DhtRecordError(f"record under {peer_id} was signed by {env.sender}")
    if not roster.is_member(peer_id):
        raise DhtRecordError(f"{peer_id} is not on the roster")
    try:
        addrs = json.loads(env.payload)["addrs"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DhtRecordError(f"record for {peer_id} has no address list: {exc}") from exc
    if not isinstance(addrs, list) or not all(isinstance(a, str) for a in addrs):
        raise DhtRecordError(f"record for {peer_id} has a malformed address list")
    return peer_id, env.sent_at, addrs[:_MAX_ADDRS]


class AddressRecordValidator(Validator):
    """libp2p record validator: only members' own fresh records are stored or used."""

    def __init__(self, roster: Callable[[], Roster], max_age_s: float) -> None:
        self._roster = roster
        self._max_age_s = max_age_s

    def validate(self, key: str, value: bytes) -> None:
        parse_record(key, value, self._roster(), self._max_age_s)

    def select(self, key: str, values: list[bytes]) -> int:
        """Index of the newest valid record (invalid ones never win)."""
        best, best_at = 0, float("-inf")
        for i, value in enumerate(values):
            try:
                _, sent_at, _ = parse_record(key, value, self._roster(), self._max_age_s)
            except DhtRecordError:
                continue
            if sent_at > best_at:
                best, best_at = i, sent_at
        return best


class DhtDiscovery:
    """Publishes our record and fetches records of members we cannot reach.

    ``learn(peer_id, addrs)`` receives addresses from verified records only;
    ``reject(reason)`` counts records that failed a check.
    """

    def __init__(
        self,
        host: IHost,
        identity: Identity,
        roster: Callable[[], Roster],
        *,
        learn: Callable[[str, list[str]], None],
        reject: Callable[[str], None],
        max_age_s: float,
    ) -> None:
        self._host = host
        self._identity = identity
        self._roster = roster
        self._learn = learn
        self._reject = reject
        self._max_age_s = max_age_s
        validator = NamespacedValidator(
            {NAMESPACE: AddressRecordValidator(roster, max_age_s)}, strict_validation=True
        )
        self.dht = KadDHT(
            host,
            DHTMode.SERVER,
            validator=validator,
            validator_changed=True,
            strict_validation=True,
            enable_providers=False,
        )
        self.records_used = 0

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run the DHT service until cancelled."""
        async with background_trio_service(self.dht):
            task_status.started()
            await trio.sleep_forever()

    async def add_members(self, connected: set[str]) -> None:
        """Put connected members into the routing table (non-members never are)."""
        roster = self._roster()
        for pid in connected:
            if roster.is_member(pid) and pid != self._identity.peer_id:
                try:
                    await self.dht.add_peer(ID.from_base58(pid), skip_server_mode_check=True)
                except Exception as exc:  # a broken peer must not stop discovery
                    log.debug("DHT could not add %s: %s", pid, exc)

    async def publish(self, addrs: list[str]) -> None:
        """Store our signed record at the closest peers (bounded)."""
        if not addrs:
            return
        key = record_key(self._identity.peer_id, self._roster().federation_id)
        value = make_record(self._identity, self._roster().federation_id, addrs)
        try:
            with trio.move_on_after(_QUERY_TIMEOUT_S):
                await self.dht.put_value(key, value)
        except Exception as exc:
            log.debug("DHT publish failed: %s", exc)

    async def lookup(self, peer_id: str) -> bool:
        """Fetch and verify ``peer_id``'s record; True when addresses were learned."""
        roster = self._roster()
        key = record_key(peer_id, roster.federation_id)
        value: bytes | None = None
        try:
            with trio.move_on_after(_QUERY_TIMEOUT_S):
                value = await self.dht.get_value(key)
        except Exception as exc:
            log.debug("DHT lookup of %s failed: %s", peer_id, exc)
        if value is None:
            return False
        try:
            _, _, addrs = parse_record(key, value, roster, self._max_age_s)
        except DhtRecordError as exc:
            log.warning("ignored DHT record: %s", exc)
            self._reject("dht_invalid")
            return False
        self.records_used += 1
        self._learn(peer_id, addrs)
        return True
