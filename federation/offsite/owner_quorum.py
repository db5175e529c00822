"""How the owner accepts a group's average it did not help compute.

The owner takes part in a group with weight 0: it contributes nothing to the sum and
does not count towards ``MIN_GROUP_SIZE``. Each averaging member hands it the group's
result; the owner believes a result only when at least ``MIN_GROUP_SIZE`` members, and
more than half of those it heard from, sent byte-identical copies (secure and plain
averaging give every member the same bytes). A malicious minority can withhold or send
garbage, but cannot make the owner plug in an average of its choosing.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

from ..round import MIN_GROUP_SIZE


class NoQuorumError(Exception):
    """Too few members agreed on one average for the owner to plug it in."""


@dataclass(frozen=True)
class QuorumResult:
    payload: bytes
    confirmed_by: tuple[str, ...]
    heard_from: int


def agreed_average(copies: dict[str, bytes]) -> QuorumResult:
    """The payload a quorum of senders agree on; ``NoQuorumError`` if none."""
    digests = {sender: hashlib.sha256(payload).digest() for sender, payload in copies.items()}
    if not digests:
        raise NoQuorumError("no member sent the group's average")
    best, votes = Counter(digests.values()).most_common(1)[0]
    if votes < MIN_GROUP_SIZE or 2 * votes <= len(digests):
        raise NoQuorumError(
            f"{votes} of {len(digests)} members agree on one average; need at "
            f"least {MIN_GROUP_SIZE} and more than half"
        )
    confirmed = tuple(sorted(s for s, d in digests.items() if d == best))
    return QuorumResult(copies[confirmed[0]], confirmed, len(digests))
