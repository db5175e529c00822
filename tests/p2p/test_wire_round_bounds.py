"""Round numbers read from the wire are bounded (issue #19).

A heartbeat advertising round 2**63 made a member adopt that round and then exit with
an OverflowError from SQLite on every restart. Heartbeats and blob headers now refuse
any round outside 0..MAX_ROUND (2**31 - 1).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time

import pytest
from fedswarm.p2p.errors import BlobSignatureError, GossipRejectedError
from fedswarm.p2p.framing import MAX_ROUND, BlobHeader
from fedswarm.p2p.identity import Identity
from fedswarm.p2p.membership import Heartbeat, Membership

from .conftest import StaticNode


def _hb(peer: str, **fields: object) -> Heartbeat:
    base = Heartbeat(peer_id=peer, org="o", addrs=(), round=3, state="training",
                     adapter_fingerprint="abc", version="0.1", sent_at=time.time(),
                     adapter_round=2)
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def _raw(hb: Heartbeat, **overrides: object) -> bytes:
    doc = json.loads(hb.encode())
    doc.update(overrides)
    return json.dumps(doc).encode()


def test_max_round_is_the_largest_signed_32_bit_integer() -> None:
    assert MAX_ROUND == 2**31 - 1


@pytest.mark.parametrize("field", ["round", "adapter_round"])
@pytest.mark.parametrize("value", [2**63, MAX_ROUND + 1, -5, 1.5, True])
def test_heartbeat_with_an_out_of_range_round_is_refused(field: str, value: object) -> None:
    peer = Identity.generate().peer_id
    m = Membership(StaticNode(), "me")
    with pytest.raises(GossipRejectedError):
        m.accept(peer, _raw(_hb(peer), **{field: value}))
    assert m.view() == {}


def test_heartbeat_at_the_bound_is_accepted_and_carries_its_adapter_round() -> None:
    peer = Identity.generate().peer_id
    m = Membership(StaticNode(), "me")
    m.accept(peer, _hb(peer, round=MAX_ROUND, adapter_round=MAX_ROUND - 1).encode())
    view = m.view()[peer]
    assert (view.round, view.adapter_round, view.fingerprint) == (MAX_ROUND, MAX_ROUND - 1, "abc")


def test_heartbeat_without_adapter_round_means_none_advertised() -> None:
    peer = Identity.generate().peer_id
    doc = json.loads(_hb(peer).encode())
    del doc["adapter_round"]
    assert Heartbeat.decode(json.dumps(doc).encode()).adapter_round == -1


def test_our_heartbeat_advertises_the_round_of_its_fingerprint() -> None:
    m = Membership(StaticNode(), "me")
    m.update_local(round=5, fingerprint="f4", adapter_round=4)
    hb = Heartbeat.decode(m.heartbeat().encode())
    assert (hb.round, hb.adapter_fingerprint, hb.adapter_round) == (5, "f4", 4)


@pytest.mark.parametrize("value", [2**63, MAX_ROUND + 1])
def test_blob_header_with_an_out_of_range_round_is_refused(value: int) -> None:
    header = BlobHeader(federation_id="fed", sender="s", recipient="r", kind="adapter",
                        round=7, length=1, sha256=hashlib.sha256(b"x").digest(), sent_at=1.0)
    doc = json.loads(header.to_json())
    doc["round"] = value
    with pytest.raises(BlobSignatureError, match="round"):
        BlobHeader.from_json(json.dumps(doc).encode())
    doc["round"] = MAX_ROUND
    assert BlobHeader.from_json(json.dumps(doc).encode()).round == MAX_ROUND
