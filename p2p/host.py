"""Build the libp2p host with the only safe options: TCP + Noise + Yamux.

py-libp2p's default security options also accept secio and *plaintext*
dialers, and its default muxer list includes Mplex. We pass explicit
single-entry maps so a peer that cannot speak Noise and Yamux never gets a
connection. Two py-libp2p defaults are changed on the swarm as well: an inbound
connection's slot is given back when it closes (:mod:`.inbound_connections`), and the
auto-connector that dials every peer in the peerstore stays off
(:mod:`.auto_connector_off`). Must be called on the p2p (trio) thread.
"""

from __future__ import annotations

from collections.abc import Sequence

import multiaddr
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from .auto_connector_off import turn_off_auto_connector
from .identity import Identity
from .inbound_connections import release_inbound_slots_on_close
from .refusals import RefusalCountingUpgrader, RefusedHook


def build_host(
    identity: Identity,
    listen: Sequence[str] = (),
    *,
    enable_mdns: bool = False,
    on_refused: RefusedHook | None = None,
) -> IHost:
    """A libp2p host keyed by ``identity`` that negotiates only Noise and Yamux.

    ``on_refused(reason, peer_id, detail)`` hears of every inbound connection the
    transport refuses before fedswarm sees it (:mod:`.refusals`).
    """
    key_pair = create_new_key_pair(identity.seed)
    noise = NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
    host = new_host(
        key_pair=key_pair,
        sec_opt={TProtocol(NOISE_PROTOCOL_ID): noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        listen_addrs=[multiaddr.Multiaddr(a) for a in listen] or None,
        enable_mDNS=enable_mdns,
        enable_quic=False,
    )
    swarm = host.get_network()
    release_inbound_slots_on_close(swarm, on_refused)
    turn_off_auto_connector(swarm)
    if on_refused is not None:
        swarm.upgrader = RefusalCountingUpgrader(swarm.upgrader, on_refused)  # type: ignore[attr-defined]
    return host
