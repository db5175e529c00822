"""A malicious group member sends a bad plaintext update: the others' round goes on.

Runs the daemon's real ``plain_group_average`` with a real ``Mailbox``; the network
is replaced by handing each letter straight to the mailbox, since what is under test
is what the receiving side does with the bytes (the network paths are covered by
``test_hostile_peers_against_a_real_daemon``).
"""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest
from fedswarm.federation.averaging.plain import KIND, encode_update, plain_group_average
from fedswarm.federation.link import FunctionLink
from fedswarm.federation.mailbox import Letter, Mailbox
from fedswarm.federation.round import RoundContext

SIZE = 8
# honest inputs lie within the clip bound (1.0) that plain averaging shares with secagg
HONEST = {"peer-a": np.full(SIZE, 0.25, np.float32), "peer-b": np.full(SIZE, 0.75, np.float32)}
GROUP = ["peer-a", "peer-b", "peer-m"]


def _nan() -> bytes:
    v = np.ones(SIZE, np.float32)
    v[3] = np.nan
    return encode_update(v, 1.0)


def _inf() -> bytes:
    v = np.ones(SIZE, np.float32)
    v[0] = np.inf
    return encode_update(v, 1.0)


HOSTILE = {
    "NaN value": _nan(),
    "Inf value": _inf(),
    "wrong shape": encode_update(np.ones(SIZE + 1, np.float32), 1.0),
    "oversized body": encode_update(np.ones(SIZE, np.float32), 1.0) + bytes(4096),
    "truncated body": encode_update(np.ones(SIZE, np.float32), 1.0)[:-5],
    "NaN weight": struct.pack("!dQ", float("nan"), SIZE) + np.ones(SIZE, np.float32).tobytes(),
    "negative weight": encode_update(np.ones(SIZE, np.float32), -5.0),
    "weight 1e300": encode_update(np.ones(SIZE, np.float32), 1e300),
    "weight 1e308": encode_update(np.ones(SIZE, np.float32), 1e308),
    "empty": b"",
}


async def _average_with(hostile: bytes) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    mailbox = Mailbox(max_bytes_per_sender_per_round=2**20)
    mailbox.advance(4)
    mailbox.put(Letter("peer-b", 4, KIND, encode_update(HONEST["peer-b"], 1.0)))
    mailbox.put(Letter("peer-m", 4, KIND, hostile))
    rejected: list[tuple[str, str]] = []

    async def send_blob(peer: str, kind: str, round: int, payload: bytes) -> None:
        return None

    ctx = RoundContext(
        me="peer-a", round=4, members=tuple(sorted(GROUP)), link=FunctionLink(send_blob),
        mailbox=mailbox, deadline=time.monotonic() + 1.0,
        on_reject=lambda peer, kind, why: rejected.append((peer, why)),
    )
    outcome = await plain_group_average(ctx, HONEST["peer-a"], 1.0)
    return outcome.average, outcome.survivors, rejected


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_bad_update_is_rejected_logged_and_the_round_continues(name: str) -> None:
    average, survivors, rejected = await _average_with(HOSTILE[name])
    assert survivors == ["peer-a", "peer-b"]
    assert [peer for peer, _ in rejected] == ["peer-m"], rejected
    np.testing.assert_array_equal(average, np.full(SIZE, 0.5, np.float32))


async def test_extreme_norm_update_is_clipped_or_rejected() -> None:
    average, survivors, rejected = await _average_with(
        encode_update(np.full(SIZE, 1e30, np.float32), 1.0)
    )
    assert float(np.max(np.abs(average))) < 1e3
    assert survivors == ["peer-a", "peer-b"]
    assert [peer for peer, _ in rejected] == ["peer-m"], rejected
