"""A member taken off the roster is not dialled again, by fedswarm or by py-libp2p.

py-libp2p's auto-connector dialled every peer in the peerstore while a node had fewer
than 50 connections; a removed member's signed record stays there, so it was dialled,
refused by our roster check, and dialled again on the disconnect, hundreds of times a
minute (fedswarm.p2p.auto_connector_off). The library waits 60 s after a disconnect
before it dials that peer again; the test shortens that wait to 2 s, as the inbound-slot
tests shrink their cap, so what would happen after a minute shows in seconds.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fedswarm.p2p.identity import Identity
from fedswarm.p2p.roster import Roster

from .conftest import make_roster, wait_until

WATCH_S = 10.0


async def test_nobody_dials_a_member_once_every_roster_dropped_it(node_factory: Any) -> None:
    ids = [Identity.generate() for _ in range(3)]
    roster = make_roster(ids)
    (a, _), (b, _), (c, _) = [await node_factory(identity, roster) for identity in ids]
    for node in (a, b, c):
        node._host.get_network().auto_connector._disconnect_backoff = 2.0
    await b.dial(a.listen_addrs[0])
    await c.dial(a.listen_addrs[0])
    assert await wait_until(lambda: all(len(n.connected_peers()) == 2 for n in (a, b, c)), 30)
    await asyncio.sleep(3)  # pubsub has carried every member's signed peer record by now
    assert all(len(n.connected_peers()) == 2 for n in (a, b, c))

    # Every roster drops b, b's own included: nobody has a reason to dial anybody.
    without_b = Roster(roster.federation_id,
                       tuple(m for m in roster.members if m.peer_id != b.peer_id))
    only_b = Roster(roster.federation_id,
                    tuple(m for m in roster.members if m.peer_id == b.peer_id))
    a.set_roster(without_b)
    c.set_roster(without_b)
    b.set_roster(only_b)
    assert await wait_until(lambda: not b.connected_peers(), 15)
    await asyncio.sleep(WATCH_S)

    refused = {name: node.stats()["rejected"].get("not_member", 0)
               for name, node in (("a", a), ("b", b), ("c", c))}
    assert refused == {"a": 0, "b": 0, "c": 0}
    assert a.connected_peers() == {c.peer_id}
    assert not b.connected_peers()
