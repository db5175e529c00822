"""Deterministic rotating roles: who aggregates and who decrypts in a round."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from fedswarm.secagg.errors import ProtocolViolationError


def assign_roles(members: Sequence[str], round: int, group_id: str) -> tuple[str, str]:
    """Return (aggregator, decryptor) for this group and round.

    Every member computes the same answer from public data, so no election messages are
    needed.  The offset comes from a hash of the group id (different groups start at
    different members) plus the round number, so the roles move to the next member each
    round.  The decryptor is the member after the aggregator, so A != D always.
    """
    ordered = sorted(set(members))
    if len(ordered) != len(members):
        raise ProtocolViolationError("group members must be distinct")
    if len(ordered) < 2:
        raise ProtocolViolationError("a group needs at least two members to assign A != D")
    offset = int.from_bytes(hashlib.sha256(group_id.encode()).digest()[:8], "big")
    index = (offset + round) % len(ordered)
    return ordered[index], ordered[(index + 1) % len(ordered)]
