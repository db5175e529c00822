"""The four messages of group agreement, as small JSON documents.

Signing, the federation id and transport are the caller's job (gossip or a blob
stream); these classes only guarantee that a decoded message is well formed and
self-consistent, so the state machines in ``group_agreement`` never see nonsense.
Construction validates too: a message that exists is a valid message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from ..errors import GroupMessageError
from ..round import MIN_GROUP_SIZE
from .plan import group_id

MAX_MESSAGE_BYTES = 64 * 1024
"""Far above a group of a few dozen peer ids; anything larger is rejected unparsed."""

MAX_GROUP_MEMBERS = 1024
"""More members than any 64 KiB message can name: a bound for numbers, not a limit."""


def _check_round(round: int) -> None:
    if not isinstance(round, int) or isinstance(round, bool) or round < 0:
        raise GroupMessageError(f"round must be a non-negative integer (got {round!r})")


def _check_peer(peer: str, field: str) -> None:
    if not isinstance(peer, str) or not peer:
        raise GroupMessageError(f"{field} must be a non-empty string (got {peer!r})")


def _check_members(members: tuple[str, ...], minimum: int) -> None:
    if not isinstance(members, tuple):
        raise GroupMessageError("members must be a tuple of peer ids")
    for peer in members:
        _check_peer(peer, "member")
    if list(members) != sorted(set(members)):
        raise GroupMessageError("members must be sorted and free of duplicates")
    if len(members) < minimum:
        raise GroupMessageError(f"a group needs at least {minimum} members (got {len(members)})")


def _check_group_id(value: str) -> None:
    if not isinstance(value, str) or len(value) != 16:
        raise GroupMessageError(f"group_id must be 16 hex characters (got {value!r})")


class _WireMessage:
    """Encoding shared by the four group messages: a JSON object tagged with ``KIND``."""

    KIND: ClassVar[str]

    def encode(self) -> bytes:
        return _dump(self.KIND, self.__dict__)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Decode ``data`` as this message type; ``GroupMessageError`` for anything else."""
        message = decode_message(data)
        if not isinstance(message, cls):
            raise GroupMessageError(f"expected a {cls.KIND} message, got a {message.KIND}")
        return message


@dataclass(frozen=True)
class Invitation(_WireMessage):
    """A leader asks ``members`` to form the group ``group_id`` in ``round``."""

    round: int
    group_id: str
    leader: str
    members: tuple[str, ...]
    KIND: ClassVar[str] = "invitation"

    def __post_init__(self) -> None:
        _check_round(self.round)
        _check_group_id(self.group_id)
        _check_peer(self.leader, "leader")
        _check_members(self.members, MIN_GROUP_SIZE)
        if self.leader not in self.members:
            raise GroupMessageError("the leader must be one of the members")
        if self.group_id != group_id(self.round, self.members):
            raise GroupMessageError("group_id does not match round and members")


@dataclass(frozen=True)
class Acceptance(_WireMessage):
    """``peer`` commits to the group ``group_id`` for ``round``; it accepts nothing else.

    ``min_members`` is the smallest final ``peer`` will take part in (its own plan's
    ``contributor_floor``): a leader that cannot gather that many dissolves instead of
    finalising a group this member would then refuse.
    """

    round: int
    group_id: str
    peer: str
    min_members: int = MIN_GROUP_SIZE
    KIND: ClassVar[str] = "acceptance"

    def __post_init__(self) -> None:
        _check_round(self.round)
        _check_group_id(self.group_id)
        _check_peer(self.peer, "peer")
        if (not isinstance(self.min_members, int) or isinstance(self.min_members, bool)
                or not MIN_GROUP_SIZE <= self.min_members <= MAX_GROUP_MEMBERS):
            raise GroupMessageError(
                f"min_members must be an integer in {MIN_GROUP_SIZE}..{MAX_GROUP_MEMBERS} "
                f"(got {self.min_members!r})")


@dataclass(frozen=True)
class GroupFinal(_WireMessage):
    """The leader's final member list for the invitation ``group_id`` (all accepted in time).

    ``group_id`` names the invitation; ``final_id`` names the group actually formed and
    is what the secure-aggregation round should bind into its messages.
    """

    round: int
    group_id: str
    leader: str
    members: tuple[str, ...]
    KIND: ClassVar[str] = "final"

    def __post_init__(self) -> None:
        _check_round(self.round)
        _check_group_id(self.group_id)
        _check_peer(self.leader, "leader")
        _check_members(self.members, MIN_GROUP_SIZE)
        if self.leader not in self.members:
            raise GroupMessageError("the leader must be one of the final members")

    @property
    def final_id(self) -> str:
        return group_id(self.round, self.members)


@dataclass(frozen=True)
class GroupDissolved(_WireMessage):
    """Fewer than 3 peers accepted in time: the invitation ``group_id`` forms no group."""

    round: int
    group_id: str
    leader: str
    KIND: ClassVar[str] = "dissolved"

    def __post_init__(self) -> None:
        _check_round(self.round)
        _check_group_id(self.group_id)
        _check_peer(self.leader, "leader")


GroupMessage = Invitation | Acceptance | GroupFinal | GroupDissolved

_FIELDS: dict[str, tuple[type[GroupMessage], frozenset[str]]] = {
    Invitation.KIND: (Invitation, frozenset({"round", "group_id", "leader", "members"})),
    Acceptance.KIND: (Acceptance, frozenset({"round", "group_id", "peer", "min_members"})),
    GroupFinal.KIND: (GroupFinal, frozenset({"round", "group_id", "leader", "members"})),
    GroupDissolved.KIND: (GroupDissolved, frozenset({"round", "group_id", "leader"})),
}


def _dump(kind: str, fields: dict[str, Any]) -> bytes:
    document: dict[str, Any] = {"type": kind}
    for name, value in fields.items():
        document[name] = list(value) if isinstance(value, tuple) else value
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode("utf-8")


def decode_message(data: bytes) -> GroupMessage:
    """Decode any group-agreement message; raises ``GroupMessageError`` on bad input."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise GroupMessageError(f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise GroupMessageError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        document = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise GroupMessageError(f"not a JSON document: {exc}") from None
    if not isinstance(document, dict):
        raise GroupMessageError("a group message must be a JSON object")
    kind = document.pop("type", None)
    if kind not in _FIELDS:
        raise GroupMessageError(f"unknown message type {kind!r}")
    cls, fields = _FIELDS[kind]
    if set(document) != fields:
        raise GroupMessageError(
            f"{kind} needs fields {sorted(fields)}, got {sorted(document)}"
        )
    if "members" in document:
        if not isinstance(document["members"], list):
            raise GroupMessageError("members must be a list of peer ids")
        document["members"] = tuple(document["members"])
    return cls(**document)
