"""Carry the secure-aggregation protocol over p2p blobs.

``fedswarm.secagg`` knows nothing of the network: it asks for a ``Transport``
with ``send`` and ``receive``. This module is that transport (one blob kind,
``secagg``, filed by round in the mailbox) and the adapter that turns the
protocol's result into the daemon's ``GroupAverage``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
from fedswarm.p2p.identity import Identity
from fedswarm.p2p.node import P2PNode
from fedswarm.secagg.errors import SecAggError
from fedswarm.secagg.params import PROTOCOL_NAME, SecAggParams
from fedswarm.secagg.session import GroupSpec, run_secure_aggregation

from .errors import RoundAbortedError
from .grouping import group_id
from .mailbox import Mailbox
from .plain_averaging import GroupAverage

KIND = "secagg"

log = logging.getLogger("fedswarm.daemon.secagg")


class BlobTransport:
    """``secagg.Transport`` over the p2p layer and the daemon's mailbox.

    Protocol messages up to the node's ``max_message_bytes`` (keys, shares, the
    context, survivor sets, confirmations, unmask shares) go over the member's
    long-lived message stream: a round sends about fifty of them, and a stream
    each cost more than the round's cryptography on a small model. Uploads, the
    encrypted sum and large results go as acknowledged blobs. The protocol needs
    no acknowledgement of the small ones: every step waits for what it needs
    until its deadline and treats silence as a dropout.
    """

    def __init__(self, node: P2PNode, mailbox: Mailbox, round: int) -> None:
        self._node = node
        self._mailbox = mailbox
        self._round = round

    async def send(self, recipient: str, data: bytes) -> None:
        if len(data) <= self._node.config.max_message_bytes:
            await self._node.send_message(recipient, KIND, self._round, data)
        else:
            await self._node.send_blob(recipient, KIND, self._round, data)

    async def receive(self, timeout: float) -> tuple[str, bytes]:
        letter = await self._mailbox.get(KIND, self._round, timeout)
        return letter.sender, letter.payload


async def secure_group_average(
    *,
    federation_id: str,
    round: int,
    group: Sequence[str],
    identity: Identity,
    verify: Callable[[str, bytes, bytes], bool],
    vector: np.ndarray,
    weight: float,
    node: P2PNode,
    mailbox: Mailbox,
    step_timeout_s: float,
    executor: concurrent.futures.ProcessPoolExecutor,
    params: SecAggParams | None = None,
) -> GroupAverage:
    """Run one secure-aggregation session as a member of ``group``."""
    members = tuple(sorted(group))
    spec = GroupSpec(
        federation_id=federation_id,
        group_id=group_id(round, members),
        round=round,
        members=members,
    )
    started = time.monotonic()
    try:
        result = await run_secure_aggregation(
            spec,
            identity,
            verify,
            vector,
            weight,
            BlobTransport(node, mailbox, round),
            params or SecAggParams(),
            step_timeout_s=step_timeout_s,
            executor=executor,
        )
    except SecAggError as exc:
        raise RoundAbortedError(f"secure aggregation failed: {exc}") from exc
    log.info("round %d secure aggregation phases (s): %s", round,
             " ".join(f"{k[:-2]}={v:.3f}" for k, v in result.timings.items()))
    return GroupAverage(
        average=result.average,
        total_weight=result.total_weight,
        survivors=list(result.survivors),
        dropped=list(result.dropped),
        protocol=PROTOCOL_NAME,
        aggregator=result.aggregator,
        decryptor=result.decryptor,
        bytes_sent=result.bytes_sent,
        bytes_received=result.bytes_received,
        timings={**result.timings, "aggregate_s": time.monotonic() - started},
    )
