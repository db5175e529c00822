"""When a member's connection is given up, and who redials it: the rules that keep a
busy federation's connections up (no network: the rules alone, on trio's mock clock)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import trio
import trio.testing
from fedswarm.p2p.connections import SIMULTANEOUS_DIAL_GRACE_S, Connections
from fedswarm.p2p.counters import NodeCounters
from fedswarm.p2p.ping import DEAD_LINK_S, HEARD_COUNTS_FOR_S, LATENCY_REFRESH_S, Pinger


def _pinger(answers: list[bool]) -> tuple[Pinger, list[str]]:
    """A pinger whose pings succeed or fail in the order of ``answers``."""
    closed: list[str] = []

    async def close_peer(peer_id: str) -> None:
        closed.append(peer_id)

    pinger = Pinger(SimpleNamespace(counters=NodeCounters()),  # type: ignore[arg-type]
                    close_peer=close_peer)

    async def ping(peer_id: str) -> float:
        if answers.pop(0):
            return 1.0
        raise OSError("no answer")

    pinger._ping = ping  # type: ignore[method-assign]
    return pinger, closed


def _ping_every_5_s(pinger: Pinger, times: int) -> None:
    async def main() -> None:
        for _ in range(times):
            await pinger._ping_and_track("member")
            await trio.sleep(5)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_member_too_busy_to_answer_for_a_while_keeps_its_connection() -> None:
    # 25 s of missed pings (a training step, an HE job), then an answer, then 25 s more:
    # two misses in a row used to close it, and both ends redialled on a busy machine
    answers = [False] * 6 + [True] + [False] * 6
    pinger, closed = _pinger(answers)
    _ping_every_5_s(pinger, len(answers))
    assert closed == []


def test_a_member_silent_for_the_dead_link_time_is_closed_once() -> None:
    misses = int(DEAD_LINK_S // 5) + 1  # the first miss at 0 s, the last at DEAD_LINK_S
    pinger, closed = _pinger([False] * misses)
    _ping_every_5_s(pinger, misses)
    assert closed == ["member"]


def _connections(me: str) -> Any:
    return Connections(SimpleNamespace(me=me))  # type: ignore[arg-type]


def test_only_the_lower_peer_id_redials_a_lost_connection_at_once() -> None:
    low, high = _connections("peer-a"), _connections("peer-b")
    assert low.dials_now("peer-b", down_for_s=0.0)
    assert not high.dials_now("peer-a", down_for_s=0.0)
    assert not high.dials_now("peer-a", down_for_s=SIMULTANEOUS_DIAL_GRACE_S - 0.1)
    # the lower id may be down or unable to reach us: the higher one dials after the grace
    assert high.dials_now("peer-a", down_for_s=SIMULTANEOUS_DIAL_GRACE_S)


def test_a_ping_still_waiting_is_not_doubled_on_the_members_one_stream() -> None:
    closed: list[str] = []

    async def close_peer(peer_id: str) -> None:
        closed.append(peer_id)

    pinger = Pinger(SimpleNamespace(counters=NodeCounters()),  # type: ignore[arg-type]
                    close_peer=close_peer)
    started: list[float] = []

    async def slow_ping(peer_id: str) -> float:
        started.append(trio.current_time())
        await trio.sleep(4)  # answers within the 5 s timeout, after the next interval
        return 1.0

    pinger._ping = slow_ping  # type: ignore[method-assign]

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(4):  # ping_all every 2 s while each ping takes 4 s
                nursery.start_soon(pinger.ping_all, ["member"])
                await trio.sleep(2)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert started == [0.0, 4.0]  # the pings at 2 s and 6 s found one in flight
    assert closed == []


def test_a_member_whose_messages_arrive_is_pinged_only_for_its_latency() -> None:
    """Daemons heartbeat each other on their message streams every few seconds: those
    messages prove the link, so the ping loop (every 5 s) pings such a member once a
    LATENCY_REFRESH_S, and again as soon as the messages stop."""
    pinger, closed = _pinger([True] * 100)
    pinged: list[float] = []
    answer = pinger._ping

    async def counted_ping(peer_id: str) -> float:
        pinged.append(trio.current_time())
        return await answer(peer_id)

    pinger._ping = counted_ping  # type: ignore[method-assign]

    async def main() -> None:
        for second in range(0, 150, 5):  # the ping loop every 5 s
            if second < 100:
                pinger.heard("member")  # a heartbeat arrived just now
            await pinger.ping_all(["member"])
            await trio.sleep(5)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    silent_from = 95 + HEARD_COUNTS_FOR_S  # the last message at 95 s
    refreshes = [t for t in pinged if t < silent_from]
    assert refreshes == [0.0, LATENCY_REFRESH_S]  # heard, yet pinged once a minute
    assert [t for t in pinged if t > silent_from] == [
        float(t) for t in range(110, 150, 5)]  # silent: every interval again
    assert closed == []


def test_a_message_from_a_member_clears_its_missed_pings() -> None:
    pinger, closed = _pinger([False] * 5)

    async def main() -> None:
        for _ in range(5):
            await pinger._ping_and_track("member")
            await trio.sleep(5)
        pinger.heard("member")  # 25 s of misses, then a message: the link works
        assert "member" not in pinger._failing_since

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert closed == []
