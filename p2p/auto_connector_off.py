"""Keep py-libp2p's auto-connector from dialling: fedswarm decides whom to dial.

py-libp2p 0.8.1's swarm runs an ``AutoConnector`` modelled on go-libp2p's connection
manager: while a node has fewer than ``min_connections`` (50) connections it dials peers
from its peerstore every 10 s, and again after every disconnect. A federation has fewer
than 50 members, so it never stopped, and the peerstore holds more than the roster: every
peer whose signed record arrived with a pubsub message, members removed from the roster
among them. Removing one member from a 3-member federation (the other two and the
removed one all changed their rosters, so nobody on purpose dialled anyone) made the two
remaining nodes dial the removed one 1,277 times in 130 s: each dial succeeded, our roster
check closed it (``not_member`` on both ends), the disconnect triggered the next round of
dials. It also dialled members past fedswarm's own backoff and simultaneous-dial tie-break
(docs/network.md, "Keep-alive and reconnect").

fedswarm dials members itself (``p2p/connections.py``: the roster, signed addresses,
backoff, tie-break), so :class:`AutoConnectorOff` is the library's class with ``start``
left out: it never marks itself started, so its background loop and its
on-disconnect trigger both return at once.
"""

from __future__ import annotations

import logging

from libp2p.network.auto_connector import AutoConnector

log = logging.getLogger("fedswarm.p2p.node")


class AutoConnectorOff(AutoConnector):
    """py-libp2p's auto-connector that never starts (module docstring)."""

    async def start(self) -> None:
        log.debug("py-libp2p's auto-connector stays off: fedswarm dials members itself")


def turn_off_auto_connector(swarm: object) -> None:
    """Replace a py-libp2p ``Swarm``'s auto-connector before the swarm runs."""
    swarm.auto_connector = AutoConnectorOff(swarm)  # type: ignore[attr-defined, arg-type]
