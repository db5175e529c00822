"""Gossip envelopes bind signature, federation, topic and time."""

from __future__ import annotations

import time

import pytest
from fedswarm.p2p.envelope import MAX_GOSSIP_PAYLOAD, open_envelope, seal
from fedswarm.p2p.errors import GossipRejectedError
from fedswarm.p2p.identity import Identity


def test_sealed_envelope_opens_with_sender_and_payload() -> None:
    ident = Identity.generate()
    env = open_envelope(
        seal(ident, "fed", "hb", b"hello"), federation_id="fed", topic="hb", max_age_s=60
    )
    assert env.sender == ident.peer_id
    assert env.payload == b"hello"


def test_flipped_payload_byte_fails_signature() -> None:
    raw = bytearray(seal(Identity.generate(), "fed", "hb", b"hello"))
    raw[-65] ^= 1  # last payload byte, just before the 64-byte signature
    with pytest.raises(GossipRejectedError, match="signature"):
        open_envelope(bytes(raw), federation_id="fed", topic="hb", max_age_s=60)


def test_other_federation_and_topic_are_refused() -> None:
    raw = seal(Identity.generate(), "fed-a", "hb", b"x")
    with pytest.raises(GossipRejectedError, match="federation"):
        open_envelope(raw, federation_id="fed-b", topic="hb", max_age_s=60)
    with pytest.raises(GossipRejectedError, match="topic"):
        open_envelope(raw, federation_id="fed-a", topic="other", max_age_s=60)


def test_stale_envelope_is_refused() -> None:
    raw = seal(Identity.generate(), "fed", "hb", b"x")
    with pytest.raises(GossipRejectedError, match="stale"):
        open_envelope(raw, federation_id="fed", topic="hb", max_age_s=60, now=time.time() + 3600)


def test_oversized_payload_is_refused_at_seal() -> None:
    with pytest.raises(GossipRejectedError, match="limit"):
        seal(Identity.generate(), "fed", "hb", b"x" * (MAX_GOSSIP_PAYLOAD + 1))


def test_garbage_is_refused() -> None:
    for raw in (b"", b"FSG1", b"FSG1\xff\xff" + b"\x00" * 80, b"hello world" * 10):
        with pytest.raises(GossipRejectedError):
            open_envelope(raw, federation_id="fed", topic="hb", max_age_s=60)
