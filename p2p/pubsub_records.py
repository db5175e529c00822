"""Check each peer's signed peer record once, not on every pubsub RPC it sends.

py-libp2p 0.8.1 attaches the sender's signed peer record (an Envelope) to every pubsub
RPC — messages, and the control frames GossipSub sends every heartbeat — and the
receiver verifies it, an Ed25519 check plus a peerstore update, in ``Pubsub`` and again
in ``GossipSub.handle_rpc``: twice per RPC, though a peer sends the same record bytes
until its addresses change. Among 32 idle members on 2 cores that verification was the
largest single cost the sampler found (12 % of a node's trio thread), and it helped tip
the box into the overload where pings miss and healthy links are closed
(``python -m bench.idle_mesh``, docs/reliability.md).

:func:`install` replaces the function both modules call with :func:`consume_once`,
which remembers, per receiving host and sending peer, the last record bytes that
passed, and answers True for the same bytes again without re-verifying for
:data:`RECHECK_S` (the record's peerstore TTL is 2 hours, so re-checking every 10
minutes keeps it fresh). Different bytes — a new record, a forgery — always go through
py-libp2p's own check, and only a record that passed it is remembered.

The sending side had the same waste: for every RPC it sends (each message, each
control frame, each message GossipSub replays to a peer that reconnected) py-libp2p
builds our record anew from ``host.get_addrs()``, which parses every listen address as
a multiaddr, only to find the cached record still matches. Among 32 daemons on 2 cores
that was 12 % of a daemon's trio thread, most of it in replays to reconnecting members.
:func:`envelope_once` keeps our record's bytes per host and asks py-libp2p again after
:data:`RESEND_CHECK_S`, so a changed address reaches peers within that time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any

import libp2p.peer.peerstore as _peerstore_module
import libp2p.pubsub.gossipsub as _gossipsub_module
import libp2p.pubsub.pubsub as _pubsub_module
from libp2p.pubsub import utils as _pubsub_utils

log = logging.getLogger(__name__)

RECHECK_S = 600.0
"""How long a verified record is taken as verified when the same bytes come again."""
MAX_REMEMBERED = 4096
"""(host, peer) pairs remembered; the oldest is forgotten first (then checked again)."""

RESEND_CHECK_S = 10.0
"""How long our own record's bytes are sent as they are before py-libp2p checks them
against our listen addresses again."""

_ORIGINAL = _pubsub_utils.maybe_consume_signed_record
_ORIGINAL_ENVELOPE = _peerstore_module.env_to_send_in_RPC
_lock = threading.Lock()  # every node in a process has its own trio thread
_verified: OrderedDict[tuple[str, str], tuple[bytes, float]] = OrderedDict()
_ours: dict[str, tuple[bytes, float]] = {}  # host id -> (our record's bytes, when built)


def consume_once(msg: Any, host: Any, peer_id: Any) -> bool:
    """``maybe_consume_signed_record`` that skips re-verifying bytes that passed."""
    if not msg.HasField("senderRecord"):
        return True
    key = (str(host.get_id()), str(peer_id))
    record = bytes(msg.senderRecord)
    now = time.monotonic()
    with _lock:
        seen = _verified.get(key)
    if seen is not None and seen[0] == record and now - seen[1] < RECHECK_S:
        return True
    accepted = bool(_ORIGINAL(msg, host, peer_id))
    if accepted:
        with _lock:
            _verified[key] = (record, now)
            _verified.move_to_end(key)
            while len(_verified) > MAX_REMEMBERED:
                _verified.popitem(last=False)
    return accepted


def envelope_once(host: Any) -> tuple[bytes, bool]:
    """``env_to_send_in_RPC`` that rebuilds our record's bytes at most every
    :data:`RESEND_CHECK_S` per host, not for every RPC sent."""
    key = str(host.get_id())
    now = time.monotonic()
    with _lock:
        ours = _ours.get(key)
    if ours is not None and now - ours[1] < RESEND_CHECK_S:
        return ours[0], False
    envelope, created = _ORIGINAL_ENVELOPE(host)
    with _lock:
        _ours[key] = (envelope, now)
    return envelope, created


def install() -> None:
    """Make py-libp2p's pubsub modules call :func:`consume_once` and
    :func:`envelope_once` (idempotent).

    Both modules import the functions by name; if a py-libp2p version no longer does,
    nothing is replaced and the node keeps py-libp2p's own (slower) behaviour.
    """
    for module in (_pubsub_module, _gossipsub_module):
        for name, original, replacement in (
            ("maybe_consume_signed_record", _ORIGINAL, consume_once),
            ("env_to_send_in_RPC", _ORIGINAL_ENVELOPE, envelope_once),
        ):
            current = getattr(module, name, None)
            if current is original:
                setattr(module, name, replacement)
            elif current is not replacement:
                log.warning("%s has no %s to replace; pubsub keeps py-libp2p's own, slower, "
                            "handling of peer records", module.__name__, name)
