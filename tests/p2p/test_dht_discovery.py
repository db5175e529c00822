"""Opt-in Kademlia DHT discovery: members that each know only one other member
find everyone through signed address records, with gossip announcements off."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fedswarm.p2p.dht import (
    AddressRecordValidator,
    DhtRecordError,
    make_record,
    parse_record,
    record_key,
)
from fedswarm.p2p.identity import Identity
from fedswarm.p2p.node import NodeConfig

from .conftest import make_roster, wait_until


def test_member_record_round_trips_and_forgeries_are_refused() -> None:
    ids = [Identity.generate() for _ in range(2)]
    outsider = Identity.generate()
    roster = make_roster(ids)
    addrs = ["/ip4/127.0.0.1/tcp/4001"]
    key = record_key(ids[0].peer_id, roster.federation_id)
    good = make_record(ids[0], roster.federation_id, addrs)
    assert parse_record(key, good, roster, 60.0)[::2] == (ids[0].peer_id, addrs)

    # signed by another member under ids[0]'s key
    with pytest.raises(DhtRecordError, match="signed by"):
        parse_record(key, make_record(ids[1], roster.federation_id, addrs), roster, 60.0)
    # a non-member's own record
    out_key = record_key(outsider.peer_id, roster.federation_id)
    with pytest.raises(DhtRecordError, match="not on the roster"):
        parse_record(out_key, make_record(outsider, roster.federation_id, addrs), roster, 60.0)
    # another federation's record, under either federation's key
    other = make_record(ids[0], "other-fed", addrs)
    with pytest.raises(DhtRecordError, match="federation"):
        parse_record(key, other, roster, 60.0)
    with pytest.raises(DhtRecordError, match="federation"):
        parse_record(record_key(ids[0].peer_id, "other-fed"), other, roster, 60.0)
    # tampered bytes and garbage keys
    with pytest.raises(DhtRecordError, match="signature"):
        parse_record(key, good[:-1] + bytes([good[-1] ^ 1]), roster, 60.0)
    with pytest.raises(DhtRecordError, match="not a fedswarm"):
        parse_record("/pk/abc", good, roster, 60.0)


def test_validator_prefers_newest_valid_record_and_ignores_invalid_ones() -> None:
    ids = [Identity.generate() for _ in range(2)]
    roster = make_roster(ids)
    key = record_key(ids[0].peer_id, roster.federation_id)
    validator = AddressRecordValidator(lambda: roster, 60.0)
    old = make_record(ids[0], roster.federation_id, ["/ip4/127.0.0.1/tcp/1"])
    time.sleep(0.01)
    new = make_record(ids[0], roster.federation_id, ["/ip4/127.0.0.1/tcp/2"])
    forged = make_record(ids[1], roster.federation_id, ["/ip4/127.0.0.1/tcp/3"])
    assert validator.select(key, [old, forged, new]) == 2
    with pytest.raises(DhtRecordError):
        validator.validate(key, forged)


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_chain_of_members_all_connect_through_the_dht(node_factory: Any) -> None:
    ids = [Identity.generate() for _ in range(4)]
    roster = make_roster(ids)
    nodes: list[Any] = []
    for i, ident in enumerate(ids):
        # A chain: each member knows only the member before it; no gossip
        # address announcements, so the only way to reach the far end is a DHT record.
        config = NodeConfig(
            bootstrap=(nodes[i - 1].listen_addrs[0],) if i else (),
            enable_dht=True,
            announce_addrs=False,
            dht_interval_s=1.0,
            maintenance_interval_s=0.5,
        )
        node, _ = await node_factory(ident, roster, config)
        nodes.append(node)
    everyone = {n.peer_id for n in nodes}
    assert await wait_until(
        lambda: all(n.connected_peers() == everyone - {n.peer_id} for n in nodes), timeout=60
    ), [len(n.connected_peers()) for n in nodes]
    # The far ends hold each other's address from the member's own signed
    # record (announcements are off and neither bootstraps to the other).
    assert await wait_until(
        lambda: (
            nodes[3].stats()["dht_records_used"] > 0 and nodes[0].peer_id in nodes[3]._known_addrs
        ),
        timeout=30,
    )
    assert nodes[3]._known_addrs[nodes[0].peer_id] == nodes[0].listen_addrs
