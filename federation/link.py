"""How the federation protocols reach other members: the ``Link`` protocol.

The protocols in this package never import ``fedswarm.p2p``: they are tested in one
process with an in-memory network, and the daemon hands them a ``Link`` over its
``P2PNode``. A link sends two sizes of thing to one member, tagged with a *kind*
(which protocol it is for) and the round:

* ``send_message`` for small protocol messages (at most ``max_message_bytes``), which
  the daemon carries on one long-lived stream per member;
* ``send_blob`` for anything larger (updates, sums, knowledge), one acknowledged stream
  each.

On the receiving side the daemon files everything of a kind in ``MAILBOX_KINDS`` into
the round's ``Mailbox``; the catch-up kinds are answered directly (``catch_up``).
``send_before`` is the one place that sends with a deadline and turns a failure into a
logged zero, so one unreachable member never fails a whole round.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger("fedswarm.federation.link")

# Every kind of message a member sends another, by the protocol that owns it.
GROUP_KIND = "group"  # group agreement: invitations, acceptances, finals (groups/)
PLAIN_UPDATE_KIND = "plain-update"  # plaintext averaging (averaging/plain.py)
SECAGG_KIND = "secagg"  # secure aggregation (averaging/secure.py)
FEDMKT_CARD_KIND = "fedmkt-card"  # FedMKT: which exchange a member can run (fedmkt/cards.py)
FEDMKT_KIND = "fedmkt"  # FedMKT: public-set knowledge (fedmkt/exchange.py)
ADAPTER_REQUEST_KIND = "adapter-request"  # catch-up: please send your adapter (catch_up.py)
ADAPTER_KIND = "adapter"  # catch-up: the answer (catch_up.py)
OFFSITE_AVERAGE_KIND = "offsite-average"  # offsite: a group's average, to the model owner
PACKAGE_REQUEST_KIND = "offsite-package-request"  # offsite: a slice of the package, please
PACKAGE_KIND = "offsite-package"  # offsite: the owner's answer (offsite/transport.py)

MAILBOX_KINDS = (GROUP_KIND, PLAIN_UPDATE_KIND, SECAGG_KIND, FEDMKT_CARD_KIND, FEDMKT_KIND,
                 OFFSITE_AVERAGE_KIND)
"""Kinds filed in the round's mailbox until the protocol that owns them asks."""
CATCH_UP_KINDS = (ADAPTER_REQUEST_KIND, ADAPTER_KIND)
"""Kinds answered at once by ``catch_up.AdapterExchange``, whatever the round."""
PACKAGE_KINDS = (PACKAGE_REQUEST_KIND, PACKAGE_KIND)
"""Kinds answered at once by ``offsite.transport`` (the owner serves, a member fetches)."""


class Link(Protocol):
    """Sends to one member; implemented by the daemon over ``P2PNode``."""

    @property
    def max_message_bytes(self) -> int:
        """The largest payload ``send_message`` takes; larger ones go as blobs."""
        ...

    async def send_blob(self, peer: str, kind: str, round: int, payload: bytes) -> None:
        """Deliver ``payload`` as one acknowledged blob; raises on failure."""
        ...

    async def send_message(self, peer: str, kind: str, round: int, payload: bytes) -> None:
        """Deliver a small ``payload`` (at most ``max_message_bytes``); raises on failure."""
        ...


SendFunction = Callable[[str, str, int, bytes], Awaitable[None]]


class FunctionLink:
    """A ``Link`` over one send function: every message travels as a blob.

    What the in-process simulation (``bench.quality``) and the protocol tests use; a
    real daemon's link sends small messages on kept streams instead.
    """

    max_message_bytes = 0

    def __init__(self, send: SendFunction) -> None:
        self._send = send

    async def send_blob(self, peer: str, kind: str, round: int, payload: bytes) -> None:
        await self._send(peer, kind, round, payload)

    async def send_message(self, peer: str, kind: str, round: int, payload: bytes) -> None:
        await self._send(peer, kind, round, payload)


async def send_before(
    link: Link, peer: str, kind: str, round: int, payload: bytes, deadline: float | None
) -> int:
    """Send one blob, giving up at ``deadline`` (``time.monotonic()``; None: no limit).

    Returns the bytes delivered, 0 when the send failed or timed out: a member that
    cannot be reached counts as silent, and the protocol's own deadline handles it.
    At least a second is allowed even past the deadline, so a message sent just in
    time is not cut off mid-stream.
    """
    try:
        if deadline is None:
            await link.send_blob(peer, kind, round, payload)
        else:
            timeout = max(deadline - time.monotonic(), 1.0)
            await asyncio.wait_for(link.send_blob(peer, kind, round, payload), timeout)
        return len(payload)
    except Exception as exc:
        log.warning("round %d: %s to %s not delivered: %s", round, kind, peer[-8:], exc)
        return 0


#: Pauses before the second, third and fourth try of a message :func:`resend` sends.
RETRY_PAUSES_S = (0.5, 1.0, 2.0)


async def resend(
    link: Link, peer: str, kind: str, round: int, payload: bytes,
    pauses_s: tuple[float, ...] = RETRY_PAUSES_S,
) -> int:
    """Send again, after each of ``pauses_s``, a small message whose first send failed.

    For messages whose loss costs a whole window and that the receiver takes twice
    without harm (group invitations, acceptances, finals: a resent invitation is
    re-accepted, an acceptance or final counted once). One group invitation lost to a
    connection being replaced left its group waiting out the 90 s window among 16
    daemons, and the skew it left cost two more windows (docs/reliability.md). Returns
    the bytes delivered, 0 when every try failed (each failure is logged).
    """
    for pause in pauses_s:
        await asyncio.sleep(pause)
        sent = await send_before(link, peer, kind, round, payload, deadline=None)
        if sent:
            log.info("round %d: %s to %s delivered on a later try", round, kind, peer[-8:])
            return sent
    return 0
