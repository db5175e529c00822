"""Signed gossip envelopes.

GossipSub already signs messages with the libp2p key, but that proves only who
published, not *for which federation and topic* nor *when*. Our envelope binds
federation id, topic and a timestamp into an Ed25519 signature, so a message
replayed from another federation, topic, or a stale moment is rejected.

Layout: ``"FSG1" | u16 meta_len | meta JSON | payload | 64-byte signature``;
the signature covers everything before it (with a domain prefix).
"""

from __future__ import annotations

import json
import os
import struct
import time
from dataclasses import dataclass

from .errors import GossipRejectedError
from .identity import Identity, verify_signature

GOSSIP_MAGIC = b"FSG1"
MAX_GOSSIP_PAYLOAD = 64 * 1024
_SIGN_DOMAIN = b"fedswarm-gossip-v1\x00"
_SIG = 64


@dataclass(frozen=True)
class GossipEnvelope:
    """A verified gossip message."""

    federation_id: str
    topic: str
    sender: str
    sent_at: float
    nonce: str
    payload: bytes
    signature: bytes


def seal(identity: Identity, federation_id: str, topic: str, payload: bytes) -> bytes:
    """Sign and frame ``payload``; refuses payloads over 64 KiB (gossip is for
    small announcements: GossipSub silently drops large messages)."""
    if len(payload) > MAX_GOSSIP_PAYLOAD:
        raise GossipRejectedError(
            f"gossip payload is {len(payload)} bytes, limit {MAX_GOSSIP_PAYLOAD}; use send_blob"
        )
    meta = json.dumps(
        {
            "federation_id": federation_id,
            "topic": topic,
            "sender": identity.peer_id,
            "sent_at": time.time(),
            "nonce": os.urandom(8).hex(),
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    signed = GOSSIP_MAGIC + struct.pack(">H", len(meta)) + meta + payload
    return signed + identity.sign(_SIGN_DOMAIN + signed)


def open_envelope(
    raw: bytes, *, federation_id: str, topic: str, max_age_s: float, now: float | None = None
) -> GossipEnvelope:
    """Parse and verify; raises :class:`GossipRejectedError` naming the failed check.

    Roster membership is checked by the caller (it owns the live roster).
    """
    if len(raw) < 6 + _SIG or raw[:4] != GOSSIP_MAGIC:
        raise GossipRejectedError("not a fedswarm gossip envelope")
    (meta_len,) = struct.unpack(">H", raw[4:6])
    if 6 + meta_len + _SIG > len(raw):
        raise GossipRejectedError("gossip envelope is truncated")
    try:
        meta = json.loads(raw[6 : 6 + meta_len].decode("utf-8"))
        sender = str(meta["sender"])
        env = GossipEnvelope(
            federation_id=str(meta["federation_id"]),
            topic=str(meta["topic"]),
            sender=sender,
            sent_at=float(meta["sent_at"]),
            nonce=str(meta["nonce"]),
            payload=raw[6 + meta_len : -_SIG],
            signature=raw[-_SIG:],
        )
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise GossipRejectedError(f"gossip envelope metadata is malformed: {exc}") from exc
    if not verify_signature(env.sender, _SIGN_DOMAIN + raw[:-_SIG], env.signature):
        raise GossipRejectedError(f"gossip signature does not verify for {env.sender}")
    if env.federation_id != federation_id:
        raise GossipRejectedError(f"gossip is for federation {env.federation_id!r}")
    if env.topic != topic:
        raise GossipRejectedError(
            f"gossip was signed for topic {env.topic!r}, arrived on {topic!r}"
        )
    now = time.time() if now is None else now
    if not (now - max_age_s <= env.sent_at <= now + max_age_s):
        raise GossipRejectedError(f"gossip is stale or from the future (sent_at={env.sent_at})")
    return env
