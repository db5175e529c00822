"""Plaintext group averaging: every member sends its adapter to every other member.

This is the ``secure_aggregation = "none"`` path: each member sees the others'
individual updates, which is why the demo and the logs say so loudly. It exists
for trusted single-organisation clusters and as the baseline the quality and
secure-aggregation benchmarks compare against.

Each member averages the same set of vectors in the same order (sorted by peer
id, float64 accumulation), so a group with no dropouts ends bit-identical.

Weights and values are bounded as in secure aggregation (the same ``SecAggParams``):
a weight above ``max_weight`` is refused (a weight of 1e300 would make the average
exactly the sender's vector), every vector (our own included) is clipped to
``clip_norm`` as ``secagg`` clips its inputs, and the average must pass
``bounds.check_group_average`` before it is used.
"""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections.abc import Callable

import numpy as np
from fedswarm.secagg.params import SecAggParams

from ..errors import RoundAbortedError
from ..link import PLAIN_UPDATE_KIND, send_before
from ..round import RoundContext
from .bounds import check_group_average, clip_vector
from .result import GroupAverage
from .weighting import weighted_average

KIND = PLAIN_UPDATE_KIND
MAX_ABS_VALUE = 1e3
"""No adapter parameter is anywhere near this; a peer sending one is broken or hostile,
and a single such update would dominate the group average, so it is refused."""
_HEADER = struct.Struct("!dQ")  # weight, number of float32 values
DEFAULT_PARAMS = SecAggParams()
"""The clip bound and largest weight plain averaging shares with secure aggregation."""


class UpdateFormatError(ValueError):
    """A peer's plaintext update is malformed, the wrong size, or not finite."""


def encode_update(vector: np.ndarray, weight: float) -> bytes:
    vector = np.ascontiguousarray(vector, dtype=np.float32)
    return _HEADER.pack(float(weight), vector.size) + vector.tobytes()


def decode_update(
    payload: bytes, expected_size: int, max_weight: float = DEFAULT_PARAMS.max_weight
) -> tuple[np.ndarray, float]:
    """Decode and validate a peer's update; raises ``UpdateFormatError``.

    The weight must lie in ``(0, max_weight]``, as secure aggregation requires.
    """
    if len(payload) < _HEADER.size:
        raise UpdateFormatError("update shorter than its header")
    weight, count = _HEADER.unpack_from(payload)
    if count != expected_size:
        raise UpdateFormatError(f"update has {count} values, expected {expected_size}")
    if len(payload) != _HEADER.size + 4 * count:
        raise UpdateFormatError("update length does not match its header")
    if not math.isfinite(weight) or weight <= 0:
        raise UpdateFormatError(f"update weight {weight!r} is not a positive number")
    if weight > max_weight:
        raise UpdateFormatError(f"update weight {weight:.6g} is above max_weight {max_weight:g}")
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
    params: SecAggParams = DEFAULT_PARAMS,
) -> GroupAverage:
    """Exchange updates with the group and return the weighted average of what arrived.

    Members whose update does not arrive by ``ctx.deadline`` are left out; so are
    members whose update is malformed (reported through ``on_reject``, by default
    ``ctx.on_reject`` for this kind). Every vector is clipped with ``params``; an average
    outside the bounds raises ``RoundAbortedError``.
    """
    if not 0 < weight <= params.max_weight:
        raise RoundAbortedError(
            f"own weight {weight!r} is not in (0, max_weight = {params.max_weight:g}]"
        )
    me, group, round, deadline = ctx.me, ctx.members, ctx.round, ctx.deadline
    on_reject = on_reject or ctx.rejecter(KIND)
    started = time.monotonic()
    payload = encode_update(vector, weight)
    others = ctx.others
    send_task = asyncio.gather(
        *(send_before(ctx.link, peer, KIND, round, payload, deadline) for peer in others)
    )
    received: dict[str, tuple[np.ndarray, float]] = {me: (clip_vector(vector, params), weight)}
    bytes_received = 0
    async for letter in ctx.mailbox.collect(KIND, round, others, deadline, on_reject):
        try:
            values, their_weight = decode_update(letter.payload, vector.size, params.max_weight)
            received[letter.sender] = (clip_vector(values, params), their_weight)
            bytes_received += len(letter.payload)
        except UpdateFormatError as exc:
            on_reject(letter.sender, str(exc))
    sent = sum(await send_task)
    survivors = sorted(received)
    average = weighted_average(
        [received[p][0] for p in survivors], [received[p][1] for p in survivors]
    )
    result = GroupAverage(
        average=average,
        total_weight=float(sum(received[p][1] for p in survivors)),
        survivors=survivors,
        dropped=sorted(set(group) - set(received)),
        protocol="none",
        bytes_sent=sent,
        bytes_received=bytes_received,
        timings={"aggregate_s": time.monotonic() - started},
    )
    return check_group_average(result, weight, params)
