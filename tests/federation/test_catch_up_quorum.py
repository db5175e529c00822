"""Catch-up believes only a quorum (issue #19, attack 1: catch-up takeover).

A member advertising round 999999 in its heartbeat and answering ``adapter-request``
with an adapter of its choice used to make an honest member adopt that adapter and
stop training. Now an adapter is adopted only when more than half of the up roster
members (ourselves in the denominator) advertise its round and fingerprint, never
beyond the federation's target, and the pulled vector must hash to that fingerprint
before it is loaded. Without such an adapter, a round a quorum have completed is
skipped to with our own adapter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from fedswarm.federation import catch_up
from fedswarm.federation.averaging.plain import encode_update
from fedswarm.federation.catch_up import (
    AdapterExchange,
    AdoptAdapter,
    CatchUpRefusedError,
    PulledAdapter,
    SkipAhead,
    catch_up_plan,
    check_pulled,
    quorum_for,
    quorum_size,
)
from fedswarm.learning.adapter_vector import vector_fingerprint

MANIFEST = [("lora_A", (2, 3)), ("lora_B", (3, 2))]
MAX = 2**31 - 1


@dataclass
class Advert:
    adapter_round: int
    fingerprint: str
    up: bool = True


def _members(*names: str) -> Callable[[str], bool]:
    allowed = set(names) | {"me"}
    return lambda peer: peer in allowed


def _plan(view: dict[str, Advert], own_round: int, max_round: int = MAX):
    return catch_up_plan(view, _members(*view), "me", own_round, max_round)


def test_quorum_is_more_than_half_of_the_up_members_counting_ourselves() -> None:
    assert [quorum_size(n) for n in (1, 2, 3, 4, 5, 8)] == [1, 2, 2, 3, 3, 5]


def test_one_member_advertising_a_huge_round_is_not_followed() -> None:
    view = {"a": Advert(4, "honest"), "b": Advert(4, "honest"), "evil": Advert(999_999, "evil")}
    assert _plan(view, 4) is None
    view["evil"] = Advert(2**63, "evil")  # as if the wire bound were missing: still ignored
    assert _plan(view, 4) is None


def test_a_minority_cannot_even_move_our_round() -> None:
    # Up: me, a, b, evil1, evil2. Two colluders agree on a far round: 2 of 5.
    view = {"a": Advert(4, "h"), "b": Advert(4, "h"),
            "evil1": Advert(9, "e"), "evil2": Advert(9, "e")}
    assert _plan(view, 4, max_round=20) is None


def test_a_quorum_of_holders_is_adopted_and_names_its_holders() -> None:
    view = {"a": Advert(7, "f7"), "b": Advert(7, "f7"), "c": Advert(7, "f7"),
            "evil": Advert(999_999, "evil")}
    plan = _plan(view, 2)
    assert plan == AdoptAdapter(7, "f7", ("a", "b", "c"), up_members=5)


def test_exactly_half_is_not_a_quorum_for_the_adapter() -> None:
    # Up: me, a, b, c. a and b hold round 7: 2 of 4 is not more than half; but all three
    # have completed round 3 or later, so round 3 is confirmed.
    view = {"a": Advert(7, "f7"), "b": Advert(7, "f7"), "c": Advert(3, "f3")}
    assert _plan(view, 2) == SkipAhead(3, confirmed_by=3, up_members=4)
    assert _plan(view, 3) is None


def test_several_groups_confirm_the_round_but_no_adapter() -> None:
    # Two groups averaged separately in round 6: the round is confirmed, no adapter is.
    view = {"a": Advert(6, "g1"), "b": Advert(6, "g1"), "c": Advert(6, "g1"),
            "d": Advert(6, "g2"), "e": Advert(6, "g2"), "f": Advert(6, "g2")}
    assert _plan(view, 1) == SkipAhead(6, confirmed_by=6, up_members=7)


def test_same_round_different_fingerprint_does_not_add_up() -> None:
    # Up: me, a, b, evil. Three advertise round 7, only two the same adapter.
    view = {"a": Advert(7, "f7"), "b": Advert(7, "f7"), "evil": Advert(7, "forged")}
    assert isinstance(_plan(view, 2), SkipAhead)
    view["c"] = Advert(7, "f7")  # now 3 of 5 hold f7
    plan = _plan(view, 2)
    assert isinstance(plan, AdoptAdapter) and plan.fingerprint == "f7"


def test_never_beyond_the_federations_target_or_behind_us() -> None:
    view = {"a": Advert(12, "f"), "b": Advert(12, "f"), "c": Advert(12, "f")}
    assert _plan(view, 2, max_round=10) is None  # claims above the target vouch for nothing
    assert _plan(view, 12, max_round=20) is None  # not ahead
    assert isinstance(_plan(view, 11, max_round=12), AdoptAdapter)


def test_down_peers_non_members_and_unadvertised_adapters_do_not_vouch() -> None:
    view = {"a": Advert(7, "f"), "b": Advert(7, "f", up=False), "c": Advert(-1, "")}
    # Up members: me, a, c (b is down); the stranger is not on the roster: a alone is 1 of 3.
    view_with_stranger = {**view, "stranger": Advert(7, "f")}
    members = _members("a", "b", "c")
    assert catch_up_plan(view_with_stranger, members, "me", 2, MAX) is None
    view["c"] = Advert(7, "f")
    assert isinstance(catch_up_plan(view, members, "me", 2, MAX), AdoptAdapter)


def _target_and_vector() -> tuple[AdoptAdapter, np.ndarray]:
    vector = np.arange(12, dtype=np.float32) / 10
    fingerprint = vector_fingerprint(vector, MANIFEST)
    view = {"a": Advert(7, fingerprint), "b": Advert(7, fingerprint), "c": Advert(7, fingerprint)}
    plan = _plan(view, 2)
    assert isinstance(plan, AdoptAdapter)
    return plan, vector


def _fingerprint_of(vector: np.ndarray) -> str:
    return vector_fingerprint(vector, MANIFEST)


def test_the_quorums_adapter_passes_the_check() -> None:
    target, vector = _target_and_vector()
    check_pulled(PulledAdapter("b", 7, vector.copy(), 1.0), target, _fingerprint_of(vector))


def test_an_adapter_that_does_not_hash_to_the_quorums_fingerprint_is_refused() -> None:
    target, vector = _target_and_vector()
    poisoned = vector.copy()
    poisoned[3] += 1e-3
    with pytest.raises(CatchUpRefusedError, match="hashes to"):
        check_pulled(PulledAdapter("b", 7, poisoned, 1.0), target, _fingerprint_of(poisoned))


def test_a_response_for_another_round_or_from_a_non_holder_is_refused() -> None:
    target, vector = _target_and_vector()
    with pytest.raises(CatchUpRefusedError, match="round 999999"):
        check_pulled(PulledAdapter("b", 999_999, vector, 1.0), target, _fingerprint_of(vector))
    with pytest.raises(CatchUpRefusedError, match="holders"):
        check_pulled(PulledAdapter("evil", 7, vector, 1.0), target, _fingerprint_of(vector))


def test_vector_fingerprint_matches_the_state_fingerprint_heartbeats_advertise() -> None:
    from fedswarm.learning.adapter_vector import state_fingerprint, unflatten_state

    vector = np.linspace(-1, 1, 12, dtype=np.float32)
    assert state_fingerprint(unflatten_state(vector, MANIFEST)) == vector_fingerprint(
        vector, MANIFEST
    )


def test_a_newer_adapter_counts_only_with_a_quorum_advertising_exactly_it() -> None:
    view = {"a": Advert(9, "f9"), "b": Advert(9, "f9"), "c": Advert(8, "f8"),
            "evil": Advert(9, "forged")}
    members = _members(*view)
    assert quorum_for(view, members, "me", 9, "f9") is None  # 2 of 5
    view["c"] = Advert(9, "f9")
    assert quorum_for(view, members, "me", 9, "f9") == AdoptAdapter(
        9, "f9", ("a", "b", "c"), up_members=5)
    assert quorum_for(view, members, "me", 9, "forged") is None
    assert quorum_for(view, members, "me", 9, "") is None  # no fingerprint vouches for nothing


class _AnsweringLink:
    """A link whose holders answer every adapter request at once with their round."""

    def __init__(self) -> None:
        self.exchange: AdapterExchange | None = None
        self.requests: list[tuple[str, float]] = []

    async def send_blob(self, peer: str, kind: str, round: int, data: bytes) -> None:
        self.requests.append((peer, time.monotonic()))
        assert self.exchange is not None
        payload = encode_update(np.zeros(4, np.float32), 1.0)
        asyncio.get_running_loop().call_soon(self.exchange.on_response, peer, 5, payload)


async def test_a_member_never_asks_one_holder_twice_within_its_rate_limit(monkeypatch) -> None:
    """A holder refuses a second request within MIN_REQUEST_INTERVAL_S, and the refused
    request waits out its whole timeout (30 s in a daemon): the asker spreads its
    requests over the holders and, asking one again, first waits out the interval."""
    monkeypatch.setattr(catch_up, "MIN_REQUEST_INTERVAL_S", 0.3)
    link = _AnsweringLink()
    exchange = AdapterExchange(link, lambda: None)  # type: ignore[arg-type]
    link.exchange = exchange
    holders = ("a", "b")
    first = exchange.least_recently_asked(holders)
    await exchange.pull(first, 0, 4, 5.0)
    second = exchange.least_recently_asked(holders)
    assert second != first
    await exchange.pull(second, 0, 4, 5.0)
    again = exchange.least_recently_asked(holders)
    assert again == first
    await exchange.pull(again, 0, 4, 5.0)
    asked_at = {peer: [t for p, t in link.requests if p == peer] for peer in holders}
    assert asked_at[first][1] - asked_at[first][0] >= 0.3
