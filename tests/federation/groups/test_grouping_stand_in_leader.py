"""A stand-in leads a planned group whose leader is silent (issue #27).

The rule (``agreement`` rule 5): rank ``k`` of a planned group (its ``k``-th lowest id)
leads ``planned[k:]`` at its stand-in time if it has committed to nothing by then and
``planned[k:]`` keeps the group's contributor floor; a follower accepts that invitation
under the plan-matching rules, and only once its own stand-in time for rank ``k`` has
passed without a commitment to a lower rank. Invitation window 1 s here: rank 1 stands
in at 0.5 s, rank 2 at 0.75 s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pytest
from fedswarm.federation.groups.agreement import (
    AgreementConfig,
    Alone,
    Formed,
    GroupAgreement,
    Outgoing,
)
from fedswarm.federation.groups.messages import Acceptance, GroupFinal, Invitation
from fedswarm.federation.groups.plan import group_id, plan_groups

CONFIG = AgreementConfig(invite_window=1.0, final_grace=1.0)
RANK_1 = CONFIG.stand_in_time(1)  # 0.5
RANK_2 = CONFIG.stand_in_time(2)  # 0.75


def _invite(members: Sequence[str], round: int = 1) -> Invitation:
    members = tuple(sorted(members))
    return Invitation(round, group_id(round, members), members[0], members)


def _peers(view: Sequence[str], up: Iterable[str], round: int = 1,
           starts: dict[str, float] | None = None) -> dict[str, GroupAgreement]:
    """The agreements of the peers in ``up``; the rest of ``view`` is silent."""
    starts = starts or {}
    return {peer: GroupAgreement(peer, round, view, starts.get(peer, 0.0), config=CONFIG)
            for peer in up}


def _exchange(peers: dict[str, GroupAgreement], sender: str, outgoing: list[Outgoing],
              now: float) -> None:
    """Deliver ``outgoing`` and every reply it causes, instantly, at ``now``."""
    queue = [(sender, out) for out in outgoing]
    while queue:
        origin, out = queue.pop(0)
        for recipient in out.recipients:
            if recipient in peers:
                replies = peers[recipient].receive(out.message, origin, now)
                queue.extend((recipient, reply) for reply in replies)


def _tick(peers: dict[str, GroupAgreement], now: float) -> None:
    """Send each leader's invitation (once), then advance every peer's timers to ``now``."""
    for peer, agreement in peers.items():
        _exchange(peers, peer, agreement.start() + agreement.poll(now), now)


def test_a_silent_leaders_group_forms_under_its_stand_in() -> None:
    peers = _peers("abcd", "bcd")  # a, the planned leader, crashed but is still listed up
    assert all(agreement.planned == tuple("abcd") for agreement in peers.values())
    _tick(peers, 0.0)
    _tick(peers, RANK_1 - 0.01)
    assert all(agreement.outcome is None for agreement in peers.values())
    assert peers["b"].leader is None  # b waits for a until its stand-in time
    _tick(peers, RANK_1)
    for peer in "bcd":
        outcome = peers[peer].outcome
        assert isinstance(outcome, Formed), (peer, outcome)
        assert outcome.members == tuple("bcd") and outcome.leader == "b"
        assert outcome.min_members == 3  # the floor of the planned four


def test_the_real_leaders_late_invitation_after_commitment_is_ignored() -> None:
    peers = _peers("abcd", "bcd")
    _tick(peers, RANK_1)
    committed = peers["c"].book.committed
    assert committed is not None and committed.leader == "b"
    late = GroupAgreement("a", 1, "abcd", 0.55, config=CONFIG)  # a started late
    invitation = late.start()
    assert [out.message for out in invitation] == [_invite("abcd")]
    for peer in "bcd":
        assert peers[peer].receive(invitation[0].message, "a", 0.6) == []
        assert peers[peer].book.committed == committed
    late.poll(1.55)  # nobody accepted a: its group dissolves
    assert isinstance(late.outcome, Alone)
    assert all(peers[p].outcome == peers["b"].outcome for p in "cd")


def test_a_stand_in_invitation_before_the_followers_stand_in_time_is_held_not_accepted(
) -> None:
    # A hostile b invites at once, hoping to cut the live leader a out of the group.
    follower = GroupAgreement("c", 1, "abcd", 0.0, config=CONFIG)
    early = _invite("bcd")
    assert follower.receive(early, "b", 0.1) == []
    assert follower.book.committed is None
    # the live leader's invitation arrives before c's stand-in time and wins
    leader = _invite("abcd")
    assert follower.receive(leader, "a", 0.2) == [
        Outgoing(("a",), Acceptance(1, leader.group_id, "c", min_members=3))]
    assert follower.poll(RANK_1) == []  # b's held invitation is dropped, not accepted
    assert follower.book.committed == leader


def test_a_held_stand_in_invitation_is_accepted_at_the_followers_own_stand_in_time(
) -> None:
    # b started its round 0.3 s before c (it trained faster): its stand-in time came first.
    follower = GroupAgreement("c", 1, "abcd", 0.3, config=CONFIG)
    invitation = _invite("bcd")
    assert follower.receive(invitation, "b", RANK_1) == []  # c's own time is 0.8
    assert follower.poll(0.3 + RANK_1 - 0.01) == []
    assert follower.poll(0.3 + RANK_1) == [
        Outgoing(("b",), Acceptance(1, invitation.group_id, "c", min_members=3))]
    assert follower.book.committed == invitation


def test_a_stand_in_invitation_from_the_wrong_rank_is_refused_until_its_ranks_time() -> None:
    # Planned group of six (floor 4): c is rank 2 and may stand in only at 0.75 s.
    follower = GroupAgreement("e", 1, "abcdef", 0.0, config=CONFIG)
    assert follower.planned == tuple("abcdef")
    too_early = _invite("cdef")
    assert follower.receive(too_early, "c", RANK_1) == []  # rank 2 at rank 1's time
    assert follower.book.committed is None
    # An inviter that is not the lowest of its members leaves out more than the members
    # ranked before it: ignored whatever the time.
    skipping = Invitation(1, group_id(1, tuple("bcdef")), "c", tuple("bcdef"))
    assert follower.receive(skipping, "c", RANK_2) == []
    assert follower.book.committed is None
    # At rank 2's time, with nothing from a or b, c is the stand-in.
    sent = follower.poll(RANK_2)
    assert [out.recipients for out in sent] == [("c",)]
    assert follower.book.committed == too_early


def test_a_stand_in_invitation_naming_peers_outside_the_plan_is_refused() -> None:
    everyone = [f"Qm{i:02d}" for i in range(16)]  # a 4 x 4 grid: four groups of four
    mine = plan_groups(everyone, 0)[0]
    stand_in, me = mine[1], mine[2]
    outsider = max(peer for peer in everyone if peer not in mine)  # in another group
    follower = GroupAgreement(me, 0, everyone, 0.0, config=CONFIG)
    padded = _invite((stand_in, me, mine[3], outsider), round=0)
    assert padded.leader == stand_in
    assert follower.receive(padded, stand_in, RANK_1) == []
    assert follower.book.committed is None
    assert "other groups" in follower.follower.refused[0][1]
    honest = _invite(mine[1:], round=0)
    assert follower.receive(honest, stand_in, RANK_1) != []  # the planned rest is accepted


def test_a_stand_in_invitation_below_the_floor_is_refused() -> None:
    # Planned group of five (floor 4): b standing in for a must ask all of b..e.
    follower = GroupAgreement("c", 1, "abcde", 0.0, config=CONFIG)
    assert follower.receive(_invite("bcd"), "b", RANK_1) == []
    assert follower.book.committed is None
    assert "at least 4 must be asked" in follower.follower.refused[0][1]
    assert follower.receive(_invite("bcde"), "b", RANK_1) != []


def test_no_stand_in_leads_when_the_rest_of_the_group_is_below_the_floor() -> None:
    peers = _peers("abcd", "cd")  # a and b silent: c, rank 2, would lead only c and d
    for now in (0.0, RANK_1, RANK_2, 0.99):
        _tick(peers, now)
        assert peers["c"].leader is None
    _tick(peers, 2.0)
    assert all(isinstance(agreement.outcome, Alone) for agreement in peers.values())


def test_two_silent_leaders_cascade_to_the_third_ranked_member() -> None:
    peers = _peers("abcdef", "cdef")  # a and b silent; the floor of six is 4
    _tick(peers, 0.0)
    _tick(peers, RANK_1)
    assert all(agreement.outcome is None for agreement in peers.values())
    assert peers["c"].leader is None  # c is rank 2: rank 1's time is not its own
    _tick(peers, RANK_2)
    for peer in "cdef":
        outcome = peers[peer].outcome
        assert isinstance(outcome, Formed), (peer, outcome)
        assert outcome.members == tuple("cdef") and outcome.leader == "c"


def test_a_live_leader_keeps_its_group_and_the_next_member_does_not_stand_in() -> None:
    peers = _peers("abcd", "abcd")
    _tick(peers, 0.0)
    _tick(peers, RANK_1)
    assert peers["b"].leader is None
    assert {agreement.outcome for agreement in peers.values()} == {
        Formed(1, tuple("abcd"), "a", group_id(1, "abcd"), 3)}


def test_commit_once_holds_between_a_stand_in_and_its_lower_rank() -> None:
    # Planned group of six: c (rank 2) holds both b's and c's stand-in invitations at
    # rank 2's time; it commits to the lower rank only and never leads.
    follower = GroupAgreement("d", 1, "abcdef", 0.0, config=CONFIG)
    from_c, from_b = _invite("cdef"), _invite("bcdef")
    assert follower.receive(from_c, "c", 0.2) == []
    assert follower.receive(from_b, "b", 0.3) == []
    sent = follower.poll(RANK_2)
    assert [out.recipients for out in sent] == [("b",)]
    assert follower.book.committed == from_b
    assert follower.receive(from_c, "c", RANK_2) == []  # resent: still not accepted
    assert follower.receive(GroupFinal(1, from_c.group_id, "c", tuple("cdef")), "c",
                            0.8) == []
    assert follower.outcome is None  # c's final does not answer d's commitment
    follower.receive(GroupFinal(1, from_b.group_id, "b", tuple("bcdef")), "b", 0.8)
    assert follower.outcome == Formed(1, tuple("bcdef"), "b", from_b.group_id, 4)


def test_a_member_committed_to_its_leader_never_stands_in() -> None:
    member = GroupAgreement("b", 1, "abcd", 0.0, config=CONFIG)
    member.receive(_invite("abcd"), "a", 0.1)
    assert member.poll(RANK_1) == [] and member.leader is None
    assert member.book.committed == _invite("abcd")


def test_stand_in_times_rise_with_rank_and_stay_inside_the_window() -> None:
    times = [CONFIG.stand_in_time(rank) for rank in range(6)]
    assert times[:3] == [0.0, 0.5, 0.75]
    assert times == sorted(set(times)) and times[-1] < CONFIG.invite_window
    with pytest.raises(ValueError, match="stand_in_after"):
        AgreementConfig(stand_in_after=1.0)


def test_a_slow_leader_that_still_heartbeats_is_waited_for_not_replaced() -> None:
    working = {"a"}  # a's heartbeats say it is still training this round
    peers = {peer: GroupAgreement(peer, 1, "abcd", 0.0, config=CONFIG,
                                  awaited=lambda p: p in working) for peer in "bcd"}
    _tick(peers, 0.0)
    _tick(peers, RANK_1)
    assert peers["b"].leader is None  # b does not stand in for a live leader
    early = _invite("bcd")  # nor do c and d accept a (hostile) b's stand-in meanwhile
    assert peers["c"].receive(early, "b", RANK_1) == []
    assert peers["c"].book.committed is None
    working.clear()  # a crashed: its heartbeats stop and grow stale
    _tick(peers, 0.6)
    for peer in "bcd":
        outcome = peers[peer].outcome
        assert isinstance(outcome, Formed), (peer, outcome)
        assert outcome.members == tuple("bcd")


def test_a_stand_in_leaves_out_planned_members_it_no_longer_sees_up() -> None:
    # Planned group of six (floor 4): a is silent, and f crashed too and is down by the
    # stand-in time in everyone's view. Naming f would leave c, d and e waiting for it.
    up = list("abcde")
    peers = {peer: GroupAgreement(peer, 1, "abcdef", 0.0, config=CONFIG,
                                  view_now=lambda: up) for peer in "bcde"}
    _tick(peers, 0.0)
    _tick(peers, RANK_1)
    for peer in "bcde":
        outcome = peers[peer].outcome
        assert isinstance(outcome, Formed), (peer, outcome)
        assert outcome.members == tuple("bcde") and outcome.min_members == 4


def test_no_stand_in_leads_when_those_it_still_sees_up_are_below_the_floor() -> None:
    up = list("abcd")  # planned five (floor 4): a silent, e down: b, c, d are three
    peers = {peer: GroupAgreement(peer, 1, "abcde", 0.0, config=CONFIG,
                                  view_now=lambda: up) for peer in "bcd"}
    _tick(peers, 0.0)
    _tick(peers, RANK_1)
    assert peers["b"].leader is None
    _tick(peers, 3.0)
    assert all(isinstance(agreement.outcome, Alone) for agreement in peers.values())
