"""A member still finishing the previous round is waited for, a bounded while.

Peers start a round when their last one ends; a group whose round ran long reaches the
next one late. While a member's signed heartbeat names the previous round (``behind``),
its leader keeps the invitation window open and its followers keep waiting for the
final, each at most ``late_wait`` of the window longer (``AgreementConfig.late_wait``).
Invitation window 1 s, grace 1 s, late_wait 1 (so up to 1 s more) here.
"""

from __future__ import annotations

from collections.abc import Callable

from fedswarm.federation.groups.agreement import (
    AgreementConfig,
    Alone,
    Formed,
    GroupAgreement,
    Outgoing,
)

from .test_grouping_stand_in_leader import _exchange

CONFIG = AgreementConfig(invite_window=1.0, final_grace=1.0, late_wait=1.0)
GROUP = "abcd"


def _agreement(peer: str, start: float, behind: Callable[[str], bool]) -> GroupAgreement:
    return GroupAgreement(peer, 1, GROUP, start, config=CONFIG, behind=behind,
                          awaited=behind)


def _tick(peers: dict[str, GroupAgreement], now: float) -> None:
    for peer, agreement in peers.items():
        _exchange(peers, peer, agreement.start() + agreement.poll(now), now)


def _late_d_joins_at(arrives: float, behind_until: float) -> dict[str, GroupAgreement]:
    """a, b, c start at 0; d's heartbeats say round 0 until ``behind_until``; d starts
    round 1 at ``arrives``. Time runs in 0.1 s steps to 3 s."""
    clock = {"now": 0.0}

    def behind(peer: str) -> bool:
        return peer == "d" and clock["now"] < behind_until

    peers = {p: _agreement(p, 0.0, behind) for p in "abc"}
    for step in range(31):
        now = clock["now"] = step / 10
        if "d" not in peers and now >= arrives:
            peers["d"] = _agreement("d", now, behind)
            # the invitation a sent at 0 waits in d's mailbox: delivered on arrival
            _exchange(peers, "a", [Outgoing(("d",), peers["a"].leader.invitation)], now)
        _tick(peers, now)
    return peers


def test_a_member_finishing_the_previous_round_is_waited_for_and_joins() -> None:
    peers = _late_d_joins_at(arrives=1.5, behind_until=1.5)  # half a window after the window
    for peer in GROUP:
        outcome = peers[peer].outcome
        assert isinstance(outcome, Formed), (peer, outcome)
        assert outcome.members == tuple(GROUP)


def test_without_the_wait_the_late_member_misses_its_group() -> None:
    # the same timing with nobody behind: a finalises at 1 s with a, b, c and d is out
    clock = {"now": 0.0}
    peers = {p: GroupAgreement(p, 1, GROUP, 0.0, config=CONFIG) for p in "abc"}
    for step in range(31):
        now = clock["now"] = step / 10
        if "d" not in peers and now >= 1.5:
            peers["d"] = GroupAgreement("d", 1, GROUP, now, config=CONFIG)
            _exchange(peers, "a", [Outgoing(("d",), peers["a"].leader.invitation)], now)
        _tick(peers, now)
    assert peers["a"].outcome.members == tuple("abc")


def test_the_wait_ends_after_late_wait_even_if_the_member_stays_behind() -> None:
    peers = _late_d_joins_at(arrives=9.0, behind_until=9.0)  # never arrives in time
    outcome = peers["a"].outcome
    assert isinstance(outcome, Formed) and outcome.members == tuple("abc")
    assert all(peers[p].outcome == outcome or isinstance(peers[p].outcome, Formed)
               for p in "bc")


def test_a_leader_waits_for_no_one_who_was_not_behind_when_the_window_closed() -> None:
    # d was behind only until 0.8 s (then silent: crashed): a closes at 1 s as before
    clock = {"now": 0.0}

    def behind(peer: str) -> bool:
        return peer == "d" and clock["now"] < 0.8

    peers = {p: _agreement(p, 0.0, behind) for p in "abc"}
    closed_at = None
    for step in range(31):
        now = clock["now"] = step / 10
        _tick(peers, now)
        if closed_at is None and peers["a"].outcome is not None:
            closed_at = now
    assert closed_at == 1.0
    assert peers["a"].outcome.members == tuple("abc")


def test_a_follower_waits_for_the_final_while_its_leader_is_behind() -> None:
    # b committed to nothing yet; its planned leader a is still on the previous round
    clock = {"now": 0.0}

    def behind(peer: str) -> bool:
        return peer == "a" and clock["now"] < 2.5

    b = _agreement("b", 0.0, behind)
    for step in range(25):
        clock["now"] = step / 10
        b.poll(clock["now"])
    # past its own deadline (2 s) it is still waiting: a is alive, finishing round 0
    assert b.outcome is None
    clock["now"] = 3.1  # past the stretch (deadline 2 s + 1 s)
    b.poll(3.1)
    assert isinstance(b.outcome, Alone)


def test_a_follower_that_committed_waits_for_a_leader_that_started_its_round_later() -> None:
    # b starts round 1 at 0 (deadline 2 s); its leader a starts at 1.5 and invites b at
    # once; c and d never answer, so a finalises with a, b, c... only at its own window's
    # end, 2.5 s: after b's own deadline. b committed at 1.5, so it waits for that final.
    a = GroupAgreement("a", 1, "abc", 1.5, config=CONFIG)
    b = GroupAgreement("b", 1, "abc", 0.0, config=CONFIG)
    c = GroupAgreement("c", 1, "abc", 1.5, config=CONFIG)
    (invitation,) = a.start()
    (b_accepts,) = b.receive(invitation.message, "a", 1.5)
    assert a.receive(b_accepts.message, "b", 1.6) == []  # c has not answered yet
    for now in (2.0, 2.1, 2.4):
        assert b.poll(now) == [] and b.outcome is None, now
    (c_accepts,) = c.receive(invitation.message, "a", 2.45)
    (final,) = a.receive(c_accepts.message, "c", 2.45)
    b.receive(final.message, "a", 2.5)
    assert isinstance(b.outcome, Formed) and b.outcome.members == ("a", "b", "c")


def test_a_follower_whose_leader_falls_silent_after_inviting_gives_up_a_window_later() -> None:
    b = GroupAgreement("b", 1, "abc", 0.0, config=CONFIG)
    (invitation,) = GroupAgreement("a", 1, "abc", 1.5, config=CONFIG).start()
    b.receive(invitation.message, "a", 1.5)
    b.poll(4.4)  # 1.5 + window 1 + late_wait 1 + grace 1 = 4.5
    assert b.outcome is None
    b.poll(4.5)
    assert isinstance(b.outcome, Alone)
