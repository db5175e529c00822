"""Group-agreement messages round-trip through JSON and reject malformed input."""

from __future__ import annotations

import contextlib
import json

import pytest
from fedswarm.federation.errors import GroupMessageError
from fedswarm.federation.groups.messages import (
    MAX_MESSAGE_BYTES,
    Acceptance,
    GroupDissolved,
    GroupFinal,
    Invitation,
    decode_message,
)
from fedswarm.federation.groups.plan import group_id
from hypothesis import given, settings
from hypothesis import strategies as st

MEMBERS = ("a", "b", "c", "d")
GID = group_id(2, MEMBERS)


@pytest.mark.parametrize(
    "message",
    [
        Invitation(2, GID, "a", MEMBERS),
        Acceptance(2, GID, "c"),
        GroupFinal(2, GID, "a", ("a", "b", "d")),
        GroupDissolved(2, GID, "a"),
    ],
)
def test_messages_round_trip_through_json(message) -> None:
    assert decode_message(message.encode()) == message
    assert type(message).decode(message.encode()) == message


def test_decoding_the_wrong_kind_raises() -> None:
    with pytest.raises(GroupMessageError):
        Invitation.decode(Acceptance(2, GID, "c").encode())


def test_invitation_with_mismatched_group_id_is_rejected() -> None:
    document = json.loads(Invitation(2, GID, "a", MEMBERS).encode())
    document["round"] = 3
    with pytest.raises(GroupMessageError):
        decode_message(json.dumps(document).encode())


@pytest.mark.parametrize(
    "document",
    [
        {"type": "invitation", "round": 2, "group_id": GID, "leader": "z", "members": MEMBERS},
        {"type": "final", "round": 2, "group_id": GID, "leader": "a", "members": ["a", "b"]},
        {"type": "final", "round": 2, "group_id": GID, "leader": "a", "members": ["b", "a", "c"]},
        {"type": "final", "round": 2, "group_id": GID, "leader": "a", "members": "abc"},
        {"type": "acceptance", "round": -1, "group_id": GID, "peer": "c"},
        {"type": "acceptance", "round": 1.5, "group_id": GID, "peer": "c"},
        {"type": "acceptance", "round": True, "group_id": GID, "peer": "c"},
        {"type": "acceptance", "round": 2, "group_id": GID, "peer": ""},
        {"type": "acceptance", "round": 2, "group_id": "short", "peer": "c"},
        {"type": "acceptance", "round": 2, "group_id": GID},
        {"type": "acceptance", "round": 2, "group_id": GID, "peer": "c", "extra": 1},
        {"type": "party", "round": 2},
        ["not", "an", "object"],
    ],
)
def test_malformed_documents_raise_group_message_error(document) -> None:
    with pytest.raises(GroupMessageError):
        decode_message(json.dumps(document).encode())


def test_oversized_message_is_rejected_unparsed() -> None:
    with pytest.raises(GroupMessageError):
        decode_message(b" " * (MAX_MESSAGE_BYTES + 1))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_group_message_error(data: bytes) -> None:
    with contextlib.suppress(GroupMessageError):
        decode_message(data)
