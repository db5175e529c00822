"""Child process for multi-process tests: one P2PNode that sends one blob.

Usage: python blob_sender_main.py SEED_HEX ROSTER_TOML TARGET_MULTIADDR SIZE_BYTES
Prints "connected" once dialled, then "sent" after the receiver's ack.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from fedswarm.p2p.framing import BlobHeader
from fedswarm.p2p.identity import Identity
from fedswarm.p2p.node import NodeConfig, P2PNode
from fedswarm.p2p.roster import Roster


async def main() -> None:
    seed_hex, roster_path, target, size = sys.argv[1:5]

    async def ignore_blob(header: BlobHeader, data: bytes) -> None:
        pass

    async def ignore_gossip(topic: str, sender: str, payload: bytes) -> None:
        pass

    node = P2PNode(
        Identity(bytes.fromhex(seed_hex)),
        Roster.load(Path(roster_path)),
        NodeConfig(),
        on_blob=ignore_blob,
        on_gossip=ignore_gossip,
    )
    await node.start()
    peer = await node.dial(target)
    print("connected", flush=True)
    await node.send_blob(peer, "update", 1, os.urandom(int(size)))
    print("sent", flush=True)
    await node.stop()


if __name__ == "__main__":
    asyncio.run(main())
