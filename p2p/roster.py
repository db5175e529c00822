"""The federation roster: who may connect, gossip and send blobs.

The roster is distributed out of band (like a cluster's CA bundle). Every
authorisation decision in this package reduces to "is this peer id on the
roster", so loading is strict: unknown keys, duplicate peer ids or orgs, and
peer ids that do not embed an Ed25519 key are errors that name the file and key.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import multiaddr
import tomli_w

from .errors import IdentityError, RosterError
from .identity import public_key_from_peer_id

MEMBER_ROLE = "member"
MODEL_OWNER_ROLE = "model_owner"
ROLES = (MEMBER_ROLE, MODEL_OWNER_ROLE)
"""``member`` trains on its own data; ``model_owner`` (offsite-tuning, docs/offsite.md)
owns the model, sends members only an emulator and takes part in groups with weight 0."""


@dataclass(frozen=True)
class Member:
    """One organisation: its name, its peer id, optional dial addresses and its role."""

    org: str
    peer_id: str
    addrs: tuple[str, ...] = ()
    role: str = MEMBER_ROLE


@dataclass(frozen=True)
class Roster:
    """An immutable federation roster; change it with :meth:`with_member` etc."""

    federation_id: str
    members: tuple[Member, ...]

    def __post_init__(self) -> None:
        _validate(self, source="<roster>")

    @classmethod
    def load(cls, path: Path) -> Roster:
        """Parse a TOML roster (``federation_id`` + ``[[members]]`` tables)."""
        path = Path(path)
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise RosterError(f"{path}: roster file does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise RosterError(f"{path}: not valid TOML: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise RosterError(f"{path}: not UTF-8 text: {exc}") from exc
        except OSError as exc:
            raise RosterError(f"{path}: cannot read roster: {exc}") from exc
        return _from_dict(data, source=str(path))

    def save(self, path: Path) -> None:
        """Write the roster atomically (temp file + fsync + rename)."""
        path = Path(path)
        data = {
            "federation_id": self.federation_id,
            "members": [_member_dict(m) for m in self.members],
        }
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with tmp.open("wb") as fh:
                tomli_w.dump(data, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def is_member(self, peer_id: str) -> bool:
        return any(m.peer_id == peer_id for m in self.members)

    def org_of(self, peer_id: str) -> str | None:
        for m in self.members:
            if m.peer_id == peer_id:
                return m.org
        return None

    def member(self, peer_id: str) -> Member | None:
        for m in self.members:
            if m.peer_id == peer_id:
                return m
        return None

    def model_owner(self) -> str | None:
        """The peer id with ``role = "model_owner"``, if the federation has one."""
        for m in self.members:
            if m.role == MODEL_OWNER_ROLE:
                return m.peer_id
        return None

    def peer_ids(self) -> frozenset[str]:
        return frozenset(m.peer_id for m in self.members)

    def with_member(self, member: Member) -> Roster:
        """A copy with ``member`` added (or replacing the entry with its peer id)."""
        others = tuple(m for m in self.members if m.peer_id != member.peer_id)
        return replace(self, members=(*others, member))

    def without_member(self, peer_id: str) -> Roster:
        """A copy without ``peer_id`` (a no-op when it is not a member)."""
        return replace(self, members=tuple(m for m in self.members if m.peer_id != peer_id))

    def fingerprint(self) -> str:
        """sha256 hex of a canonical form (order of members and addrs ignored).

        Peers compare fingerprints in heartbeats to notice a stale roster.
        """
        canonical = {
            "federation_id": self.federation_id,
            "members": [
                # The role joins only when it is not the default, so rosters without
                # roles keep the fingerprint they had before roles existed.
                [m.org, m.peer_id, sorted(m.addrs)]
                + ([m.role] if m.role != MEMBER_ROLE else [])
                for m in sorted(self.members, key=lambda m: m.peer_id)
            ],
        }
        blob = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


_TOP_KEYS = {"federation_id", "members"}
_MEMBER_KEYS = {"org", "peer_id", "addrs", "role"}


def _member_dict(m: Member) -> dict[str, Any]:
    data: dict[str, Any] = {"org": m.org, "peer_id": m.peer_id, "addrs": list(m.addrs)}
    if m.role != MEMBER_ROLE:
        data["role"] = m.role
    return data


def _from_dict(data: dict[str, Any], source: str) -> Roster:
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise RosterError(f"{source}: unknown key {sorted(unknown)[0]!r}")
    fed = data.get("federation_id")
    if not isinstance(fed, str) or not fed:
        raise RosterError(f"{source}: key 'federation_id' must be a non-empty string")
    raw_members = data.get("members", [])
    if not isinstance(raw_members, list):
        raise RosterError(f"{source}: key 'members' must be an array of tables ([[members]])")
    members: list[Member] = []
    for i, raw in enumerate(raw_members):
        where = f"{source}: members[{i}]"
        if not isinstance(raw, dict):
            raise RosterError(f"{where} must be a table")
        unknown = set(raw) - _MEMBER_KEYS
        if unknown:
            raise RosterError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        org, peer_id, addrs = raw.get("org"), raw.get("peer_id"), raw.get("addrs", [])
        if not isinstance(org, str) or not org:
            raise RosterError(f"{where}: key 'org' must be a non-empty string")
        if not isinstance(peer_id, str) or not peer_id:
            raise RosterError(f"{where}: key 'peer_id' must be a non-empty string")
        if not isinstance(addrs, list) or not all(isinstance(a, str) for a in addrs):
            raise RosterError(f"{where}: key 'addrs' must be an array of multiaddr strings")
        role = raw.get("role", MEMBER_ROLE)
        if not isinstance(role, str):
            raise RosterError(f"{where}: key 'role' must be a string")
        members.append(Member(org=org, peer_id=peer_id, addrs=tuple(addrs), role=role))
    return _build(fed, tuple(members), source)


def _build(fed: str, members: tuple[Member, ...], source: str) -> Roster:
    roster = object.__new__(Roster)
    object.__setattr__(roster, "federation_id", fed)
    object.__setattr__(roster, "members", members)
    _validate(roster, source)
    return roster


def _validate(roster: Roster, source: str) -> None:
    if not isinstance(roster.federation_id, str) or not roster.federation_id:
        raise RosterError(f"{source}: key 'federation_id' must be a non-empty string")
    seen_ids: set[str] = set()
    seen_orgs: set[str] = set()
    owners = 0
    for i, m in enumerate(roster.members):
        where = f"{source}: members[{i}]"
        if m.role not in ROLES:
            raise RosterError(f"{where}: key 'role': unknown role {m.role!r} "
                              f"(expected one of {', '.join(ROLES)})")
        owners += m.role == MODEL_OWNER_ROLE
        if owners > 1:
            raise RosterError(f"{where}: key 'role': a second model_owner; a federation "
                              "has at most one")
        try:
            public_key_from_peer_id(m.peer_id)
        except IdentityError as exc:
            raise RosterError(f"{where}: key 'peer_id': {exc}") from exc
        if m.peer_id in seen_ids:
            raise RosterError(f"{where}: key 'peer_id': duplicate peer id {m.peer_id}")
        if m.org in seen_orgs:
            raise RosterError(f"{where}: key 'org': duplicate org {m.org!r}")
        seen_ids.add(m.peer_id)
        seen_orgs.add(m.org)
        for addr in m.addrs:
            try:
                multiaddr.Multiaddr(addr)
            except Exception as exc:  # multiaddr raises several unrelated types
                raise RosterError(f"{where}: key 'addrs': bad multiaddr {addr!r}: {exc}") from exc
