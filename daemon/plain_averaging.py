"""Plaintext group averaging: every member sends its adapter to every other member.

This is the ``secure_aggregation = "none"`` path: each member sees the others'
individual updates, which is why the demo and the logs say so loudly. It exists
for trusted single-organisation clusters and as the baseline the quality and
secure-aggregation benchmarks compare against.

Each member averages the same set of vectors in the same order (sorted by peer
id, float64 accumulation), so a group with no dropouts ends bit-identical.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .grouping import weighted_average
from .mailbox import Mailbox

log = logging.getLogger("fedswarm.daemon.plain")

KIND = "plain-update"
MAX_ABS_VALUE = 1e3
"""No adapter parameter is anywhere near this; a peer sending one is broken or hostile,
and a single such update would dominate the group average, so it is refused."""
_HEADER = struct.Struct("!dQ")  # weight, number of float32 values

SendBlob = Callable[[str, str, int, bytes], Awaitable[None]]


class UpdateFormatError(ValueError):
    """A peer's plaintext update is malformed, the wrong size, or not finite."""


@dataclass
class GroupAverage:
    """What a group's averaging produced, whichever protocol ran."""

    average: np.ndarray
    total_weight: float
    survivors: list[str]
    dropped: list[str]
    protocol: str
    aggregator: str | None = None
    decryptor: str | None = None
    bytes_sent: int = 0
    bytes_received: int = 0
    timings: dict[str, float] = field(default_factory=dict)


def encode_update(vector: np.ndarray, weight: float) -> bytes:
    vector = np.ascontiguousarray(vector, dtype=np.float32)
    return _HEADER.pack(float(weight), vector.size) + vector.tobytes()


def decode_update(payload: bytes, expected_size: int) -> tuple[np.ndarray, float]:
    """Decode and validate a peer's update; raises ``UpdateFormatError``."""
    if len(payload) < _HEADER.size:
        raise UpdateFormatError("update shorter than its header")
    weight, count = _HEADER.unpack_from(payload)
    if count != expected_size:
        raise UpdateFormatError(f"update has {count} values, expected {expected_size}")
    if len(payload) != _HEADER.size + 4 * count:
        raise UpdateFormatError("update length does not match its header")
    if not math.isfinite(weight) or weight <= 0:
        raise UpdateFormatError(f"update weight {weight!r} is not a positive number")
    vector = np.frombuffer(payload, dtype=np.float32, offset=_HEADER.size)
    if not np.isfinite(vector).all():
        raise UpdateFormatError("update contains NaN or Inf")
    largest = float(np.max(np.abs(vector))) if vector.size else 0.0
    if largest > MAX_ABS_VALUE:
        raise UpdateFormatError(f"update has an extreme value ({largest:.3g} > {MAX_ABS_VALUE:g})")
    return vector, weight


async def plain_group_average(
    *,
    me: str,
    group: Sequence[str],
    round: int,
    vector: np.ndarray,
    weight: float,
    send_blob: SendBlob,
    mailbox: Mailbox,
    deadline: float,
    on_reject: Callable[[str, str], None],
) -> GroupAverage:
    """Exchange updates with ``group`` and return the weighted average of what arrived.

    Peers whose update does not arrive by ``deadline`` (a ``time.monotonic()``
    value) are left out; so are peers whose update is malformed (reported through
    ``on_reject``).
    """
    started = time.monotonic()
    payload = encode_update(vector, weight)
    others = [p for p in group if p != me]

    async def send_one(peer: str) -> int:
        try:
            await asyncio.wait_for(
                send_blob(peer, KIND, round, payload), timeout=max(deadline - time.monotonic(), 1)
            )
            return len(payload)
        except Exception as exc:
            log.warning("round %d: could not send update to %s: %s", round, peer[-8:], exc)
            return 0

    send_task = asyncio.gather(*(send_one(p) for p in others))
    received: dict[str, tuple[np.ndarray, float]] = {me: (np.asarray(vector, np.float32), weight)}
    bytes_received = 0
    async for letter in mailbox.collect(KIND, round, others, deadline, on_reject):
        try:
            received[letter.sender] = decode_update(letter.payload, vector.size)
            bytes_received += len(letter.payload)
        except UpdateFormatError as exc:
            on_reject(letter.sender, str(exc))
    sent = sum(await send_task)
    survivors = sorted(received)
    average = weighted_average(
        [received[p][0] for p in survivors], [received[p][1] for p in survivors]
    )
    return GroupAverage(
        average=average,
        total_weight=float(sum(received[p][1] for p in survivors)),
        survivors=survivors,
        dropped=sorted(set(group) - set(received)),
        protocol="none",
        bytes_sent=sent,
        bytes_received=bytes_received,
        timings={"aggregate_s": time.monotonic() - started},
    )
