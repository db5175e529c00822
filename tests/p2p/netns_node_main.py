"""Child for the network-namespace test: one P2PNode that prints its
connected members as JSON every 0.5 s until killed.

Usage: python netns_node_main.py SEED_HEX ROSTER_TOML LISTEN [BOOTSTRAP]
FEDSWARM_TEST_MDNS=1 turns mDNS on and gossip address announcements off;
FEDSWARM_TEST_MDNS_INTERFACE=NAME binds that mDNS to one interface.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from fedswarm.p2p.framing import BlobHeader
from fedswarm.p2p.identity import Identity
from fedswarm.p2p.node import NodeConfig, P2PNode
from fedswarm.p2p.roster import Roster


async def main() -> None:
    seed_hex, roster_path, listen = sys.argv[1:4]
    bootstrap = tuple(sys.argv[4:5])

    async def ignore_blob(header: BlobHeader, data: bytes) -> None:
        pass

    async def ignore_gossip(topic: str, sender: str, payload: bytes) -> None:
        pass

    mdns = os.environ.get("FEDSWARM_TEST_MDNS") == "1"
    config = NodeConfig(
        listen=listen,
        bootstrap=bootstrap,
        reconnect_backoff_s=(0.5, 2.0),
        announce_interval_s=2.0,
        enable_mdns=mdns,
        mdns_interface=os.environ.get("FEDSWARM_TEST_MDNS_INTERFACE") or None,
        announce_addrs=not mdns,
    )
    node = P2PNode(
        Identity(bytes.fromhex(seed_hex)),
        Roster.load(Path(roster_path)),
        config,
        on_blob=ignore_blob,
        on_gossip=ignore_gossip,
    )
    await node.start()
    while True:
        print(json.dumps(sorted(node.connected_peers())), flush=True)
        await asyncio.sleep(0.5)


if __name__ == "__main__":
    asyncio.run(main())
