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
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any

import libp2p.pubsub.gossipsub as _gossipsub_module
import libp2p.pubsub.pubsub as _pubsub_module
from libp2p.pubsub import utils as _pubsub_utils

log = logging.getLogger(__name__)

RECHECK_S = 600.0
"""How long a verified record is taken as verified when the same bytes come again."""
MAX_REMEMBERED = 4096
"""(host, peer) pairs remembered; the oldest is forgotten first (then checked again)."""

_ORIGINAL = _pubsub_utils.maybe_consume_signed_record
_lock = threading.Lock()  # every node in a process has its own trio thread
_verified: OrderedDict[tuple[str, str], tuple[bytes, float]] = OrderedDict()


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


def install() -> None:
    """Make py-libp2p's pubsub modules call :func:`consume_once` (idempotent).

    Both modules import the function by name; if a py-libp2p version no longer does,
    nothing is replaced and the node keeps py-libp2p's own (slower) behaviour.
    """
    for module in (_pubsub_module, _gossipsub_module):
        current = getattr(module, "maybe_consume_signed_record", None)
        if current is _ORIGINAL:
            module.maybe_consume_signed_record = consume_once  # type: ignore[attr-defined]
        elif current is not consume_once:
            log.warning("%s has no maybe_consume_signed_record to replace; pubsub verifies "
                        "every RPC's peer record", module.__name__)
