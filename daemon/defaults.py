"""Defaults shared by the config loader, ``fedswarm init`` and the docs.

Kept in a module that imports nothing heavy, so ``fedswarm init`` does not pay for
torch just to know a default.
"""

from __future__ import annotations

#: Where the daemon listens for members unless ``[node] listen`` says otherwise:
#: loopback, so a new daemon exposes nothing until its operator names the address
#: other members reach (docs/operations.md, docs/network.md).
DEFAULT_LISTEN = "/ip4/127.0.0.1/tcp/4001"
