"""A member refuses a group average that honest clipped inputs cannot produce (issue #19).

Honest members clip to C = clip_norm and weigh at most max_weight, so an average of k
survivors lies in [-C - eps, C + eps] with a total weight between the member's own
weight and k x max_weight. Measured before the fix: a member adding p/4 to its masked
vector gave an average of 8.4e6 with total weight 1/64, and in the clear a weight of
1e300 made the average exactly the attacker's vector.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from fedswarm.federation.averaging import secure as secure_module
from fedswarm.federation.averaging.bounds import check_group_average, clip_vector
from fedswarm.federation.averaging.plain import KIND, encode_update, plain_group_average
from fedswarm.federation.averaging.result import GroupAverage
from fedswarm.federation.averaging.secure import SecureAggregation
from fedswarm.federation.errors import RoundAbortedError
from fedswarm.federation.link import FunctionLink
from fedswarm.federation.mailbox import Letter, Mailbox
from fedswarm.federation.round import MIN_GROUP_SIZE, RoundContext
from fedswarm.secagg.params import SecAggParams
from fedswarm.secagg.session import MIN_CONTRIBUTORS, AggregationResult
from fedswarm.secagg.signing import Ed25519Signer

PARAMS = SecAggParams()
GROUP = ("peer-a", "peer-b", "peer-c")


def result(average: np.ndarray, total: float, error_bound: float = 0.0) -> GroupAverage:
    return GroupAverage(average=average, total_weight=total, survivors=list(GROUP), dropped=[],
                        protocol="test", error_bound=error_bound)


def test_secagg_floor_matches_the_federation_group_floor() -> None:
    assert MIN_CONTRIBUTORS == MIN_GROUP_SIZE


def test_an_average_within_the_clip_and_weights_is_accepted() -> None:
    ok = result(np.array([-1.0, 0.5, 1.0 + 1e-4], np.float32), 3.0, error_bound=2e-4)
    assert check_group_average(ok, 1.0, PARAMS) is ok
    check_group_average(result(np.zeros(4, np.float32), 3 * PARAMS.max_weight), 1.0, PARAMS)


@pytest.mark.parametrize(("average", "total", "why"), [
    (np.array([0.1, 8.4e6], np.float32), 3.0, "clip bound"),  # p/4 added to a masked vector
    (np.array([0.1, -1.01], np.float32), 3.0, "clip bound"),
    (np.array([0.1, np.nan], np.float32), 3.0, "NaN"),
    (np.array([0.1, 0.2], np.float32), 1 / 64, "total weight"),  # weight slot lowered
    (np.array([0.1, 0.2], np.float32), 3 * PARAMS.max_weight + 1, "total weight"),
    (np.array([0.1, 0.2], np.float32), float("inf"), "total weight"),
])
def test_an_average_no_honest_group_gives_is_refused(average, total, why) -> None:
    with pytest.raises(RoundAbortedError, match=why):
        check_group_average(result(average, total, error_bound=1e-3), 1.0, PARAMS)


def test_a_published_range_tighter_than_the_clip_is_the_bound() -> None:
    """v3 results carry the group's range (clip / 2**shift); garbage inside the clip but
    beyond it is refused, and a range wider than the clip never loosens the clip."""
    inside = result(np.array([0.06, -0.062], np.float32), 3.0, error_bound=1e-3)
    inside.value_bound = 1 / 16
    assert check_group_average(inside, 1.0, PARAMS) is inside
    garbage = result(np.array([0.06, -0.4], np.float32), 3.0, error_bound=1e-3)
    garbage.value_bound = 1 / 16
    with pytest.raises(RoundAbortedError, match=r"published range 0\.0625"):
        check_group_average(garbage, 1.0, PARAMS)
    loose = result(np.array([0.06, -1.2], np.float32), 3.0, error_bound=1e-3)
    loose.value_bound = 4.0
    with pytest.raises(RoundAbortedError, match="clip bound 1"):
        check_group_average(loose, 1.0, PARAMS)


def test_clip_vector_matches_both_secagg_clip_modes() -> None:
    v = np.array([3.0, -4.0, 0.5], np.float32)
    np.testing.assert_array_equal(clip_vector(v, PARAMS), [1.0, -1.0, 0.5])
    l2 = clip_vector(v, SecAggParams(clip_mode="l2", clip_norm=1.0))
    assert np.linalg.norm(l2) == pytest.approx(1.0, rel=1e-6)


async def _plain_average(hostile: bytes, own: np.ndarray) -> tuple[GroupAverage, list[str]]:
    mailbox = Mailbox(max_bytes_per_sender_per_round=2**20)
    mailbox.advance(4)
    mailbox.put(Letter("peer-b", 4, KIND, encode_update(np.full(own.size, 0.75, np.float32),
                                                        1.0)))
    mailbox.put(Letter("peer-c", 4, KIND, hostile))
    rejected: list[str] = []

    async def send_blob(peer: str, kind: str, round: int, payload: bytes) -> None:
        return None

    ctx = RoundContext(me="peer-a", round=4, members=GROUP, link=FunctionLink(send_blob),
                       mailbox=mailbox, deadline=time.monotonic() + 1.0,
                       on_reject=lambda peer, kind, why: rejected.append(peer))
    return await plain_group_average(ctx, own, 1.0), rejected


@pytest.mark.parametrize("weight", [1e300, 1e308, PARAMS.max_weight * 2])
async def test_plain_weight_above_max_weight_is_refused(weight: float) -> None:
    own = np.full(8, 0.25, np.float32)
    attacker = np.full(8, -0.9, np.float32)
    outcome, rejected = await _plain_average(encode_update(attacker, weight), own)
    assert rejected == ["peer-c"]
    assert outcome.survivors == ["peer-a", "peer-b"]
    np.testing.assert_allclose(outcome.average, 0.5)


async def test_plain_vectors_are_clipped_like_secure_inputs() -> None:
    own = np.full(8, 0.25, np.float32)
    attacker = np.full(8, 900.0, np.float32)  # under plain's old 1e3 refusal
    outcome, rejected = await _plain_average(encode_update(attacker, PARAMS.max_weight), own)
    assert rejected == []
    assert float(np.max(np.abs(outcome.average))) <= PARAMS.clip_norm
    # its pull is what any clipped member has: value C at weight max_weight
    expected = (0.25 + 0.75 + PARAMS.clip_norm * PARAMS.max_weight) / (2 + PARAMS.max_weight)
    np.testing.assert_allclose(outcome.average, expected, rtol=1e-6)


def _secure(monkeypatch: pytest.MonkeyPatch, average: np.ndarray, total: float) -> Any:
    async def fake_session(*args: Any, **kwargs: Any) -> AggregationResult:
        return AggregationResult(average=average, total_weight=total, survivors=GROUP,
                                 dropped=(), aggregator=GROUP[0], decryptor=GROUP[1],
                                 timings={}, bytes_sent=0, bytes_received=0, error_bound=1e-5)

    monkeypatch.setattr(secure_module, "run_secure_aggregation", fake_session)
    secure = SecureAggregation(federation_id="fed", signer=Ed25519Signer.generate("peer-a"),
                               verify=lambda *_: True, executor=lambda: None,  # type: ignore
                               step_timeout_s=1.0)
    ctx = RoundContext(me="peer-a", round=4, members=GROUP, link=FunctionLink(None),  # type: ignore
                       mailbox=Mailbox(max_bytes_per_sender_per_round=1024),
                       deadline=time.monotonic() + 1.0,
                       on_reject=lambda *_: None)
    return secure.average(ctx, np.zeros(average.size, np.float32), 2.0)


@pytest.mark.parametrize(("average", "total"), [
    (np.array([0.1, 8.4e6], np.float32), 3.0),
    (np.array([0.1, 0.2], np.float32), 1 / 64),
    (np.array([0.1, 0.2], np.float32), 1.5),  # below our own weight of 2
    (np.array([0.1, 0.2], np.float32), 3 * PARAMS.max_weight + 10),
])
async def test_secure_average_outside_the_bounds_aborts_the_round(
    monkeypatch: pytest.MonkeyPatch, average: np.ndarray, total: float
) -> None:
    with pytest.raises(RoundAbortedError, match="group average refused"):
        await _secure(monkeypatch, average, total)


async def test_secure_average_inside_the_bounds_is_returned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = await _secure(monkeypatch, np.array([0.1, -1.0], np.float32), 5.0)
    assert out.total_weight == 5.0 and out.error_bound == 1e-5
