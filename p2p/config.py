"""NodeConfig: every network setting of a :class:`~.node.P2PNode` in one place.

Its own module because each part of the node (connections, gossip, ping, blob
transfer, start-up) reads it, and none of them should import the node to do so.
``fedswarm.p2p.node`` re-exports it, which is where the daemon and tests import it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class NodeConfig:
    """Network settings. Defaults are safe for a consortium on the internet."""

    listen: str = "/ip4/127.0.0.1/tcp/0"
    bootstrap: tuple[str, ...] = ()
    max_blob_bytes: int = 512 * 2**20
    blob_timeout_s: float = 120.0
    # Blobs up to this size write their first body bytes (at most one Yamux
    # window) behind the header without waiting for the accept, hiding the
    # accept round trip (1.5-2 ms, ~10 % of a 1 MiB transfer). Larger blobs
    # keep "refused before a single body byte is sent"; for them the round
    # trip is under 1 % of the transfer (16 MiB take >= 0.3 s at ~50 MB/s).
    pipeline_max_blob_bytes: int = 16 * 2**20
    # send_message's limit: small protocol messages travel on one long-lived
    # stream per member instead of a stream each (p2p/message_streams.py).
    # One Yamux window, so one message never waits on the receiver's window.
    max_message_bytes: int = 256 * 1024
    # Inbound blobs held at once (body being read or handler running); see
    # :mod:`.inbound`. Extra blobs wait up to inbound_wait_s before their body
    # is sent, then are refused as "busy".
    max_inbound_bytes: int = 2 * 2**30
    max_inbound_blobs: int = 32
    max_inbound_blobs_per_peer: int = 4
    inbound_wait_s: float = 30.0
    enable_mdns: bool = False
    mdns_interface: str | None = None
    enable_dht: bool = False
    reconnect_backoff_s: tuple[float, float] = (0.5, 30.0)
    # GossipSub throttles each forwarding peer per topic; every relay carries
    # the whole federation's traffic, so 64 members heartbeating every 2 s
    # already need 32 msg/s. 200 leaves 6x headroom (py-libp2p default: 10).
    gossip_max_msgs_per_s: float = 200.0
    gossip_max_age_s: float = 300.0
    # Address announcements: announce_burst of them announce_interval_s apart at start
    # and when our addresses change, then one every announce_refresh_s (kept below
    # gossip_max_age_s, which refuses older ones). See p2p/announce_schedule.py.
    announce_interval_s: float = 5.0
    announce_burst: int = 6
    announce_refresh_s: float = 60.0
    # Each connected member is pinged this often, on one long-lived stream (p2p/ping.py).
    ping_interval_s: float = 5.0
    # Signed address announcements on gossip. Turning them off leaves discovery
    # to the roster, bootstrap, heartbeats and (if enabled) the DHT.
    announce_addrs: bool = True
    dht_interval_s: float = 5.0
    dht_record_max_age_s: float = 3600.0
    maintenance_interval_s: float = 1.0
