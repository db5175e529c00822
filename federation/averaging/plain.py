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
import math
import struct
import time
from collections.abc import Callable

import numpy as np

from ..link import PLAIN_UPDATE_KIND, send_before
from ..round import RoundContext
from .result import GroupAverage
from .weighting import weighted_average

KIND = PLAIN_UPDATE_KIND
MAX_ABS_VALUE = 1e3
"""No adapter parameter is anywhere near this; a peer sending one is broken or hostile,
and a single such update would dominate the group average, so it is refused."""
_HEADER = struct.Struct("!dQ")  # weight, number of float32 values


class UpdateFormatError(ValueError):
    """A peer's plaintext update is malformed, the wrong size, or not finite."""


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
    ctx: RoundContext,
    vector: np.ndarray,
    weight: float,
    on_reject: Callable[[str, str], None] | None = None,
) -> GroupAverage:
    """Exchange updates with the group and return the weighted average of what arrived.

    Members whose update does not arrive by ``ctx.deadline`` are left out; so are
    members whose update is malformed (reported through ``on_reject``, by default
    ``ctx.on_reject`` for this kind).
    """
    me, group, round, deadline = ctx.me, ctx.members, ctx.round, ctx.deadline
    on_reject = on_reject or ctx.rejecter(KIND)
    started = time.monotonic()
    payload = encode_update(vector, weight)
    others = ctx.others
    mailbox = ctx.mailbox
    send_task = asyncio.gather(
        *(send_before(ctx.link, peer, KIND, round, payload, deadline) for peer in others)
    )
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
