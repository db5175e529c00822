"""Members past a round's grouping are not waited for (#27).

A member restarted into a round whose groups formed while it was down used to wait its
whole deadline for an invitation that could not come (100 s among 32 daemons), start the
next round late and skip it too, so its stale adapter kept the federation's spread for
two averaging rounds. When so many of its planned group are past this round's grouping
(their heartbeats name a later round, or this round after grouping) that the rest could
not reach the floor, it now goes alone at once; a leader likewise stops waiting for
invitees that are past.
"""

from __future__ import annotations

from collections.abc import Callable

from fedswarm.federation.groups.agreement import (
    AgreementConfig,
    Alone,
    Formed,
    GroupAgreement,
)
from fedswarm.federation.groups.messages import Acceptance, GroupFinal, Invitation

CONFIG = AgreementConfig(invite_window=1.0, final_grace=1.0)
FOUR = ("a", "b", "c", "d")  # one planned group of four, floor 3
SIX = ("a", "b", "c", "d", "e", "f")  # one planned group of six, floor 4


def _past(*peers: str) -> Callable[[str], bool]:
    gone = set(peers)
    return lambda peer: peer in gone


def _follower(me: str, past: set[str], members: tuple[str, ...] = FOUR) -> GroupAgreement:
    return GroupAgreement(me, 0, members, 0.0, config=CONFIG, past=lambda p: p in past)


def test_a_member_whose_planned_group_is_past_grouping_goes_alone_at_once() -> None:
    follower = _follower("d", {"a", "b", "c"})
    assert follower.poll(0.01) == []
    assert isinstance(follower.outcome, Alone)
    assert "3 of the 3 peers planned with this peer are past" in follower.outcome.reason


def test_it_goes_alone_as_soon_as_the_floor_is_out_of_reach_not_before() -> None:
    past: set[str] = {"a"}
    follower = _follower("d", past)
    follower.poll(0.1)
    assert follower.outcome is None  # b, c and d can still make the floor of 3
    past.add("b")
    follower.poll(0.2)
    assert isinstance(follower.outcome, Alone)


def test_one_member_past_does_not_stop_the_rest_forming_their_group() -> None:
    leader = GroupAgreement("a", 0, FOUR, 0.0, config=CONFIG, past=_past("b"))
    follower = _follower("d", {"b"})
    (invite,) = leader.start()
    assert isinstance(invite.message, Invitation)
    (accept,) = follower.receive(invite.message, "a", 0.1)
    assert isinstance(accept.message, Acceptance)
    leader.receive(accept.message, "d", 0.1)
    leader.receive(Acceptance(0, invite.message.group_id, "c"), "c", 0.1)
    # b is past: the leader need not wait out its window for it
    (final,) = leader.poll(0.2)
    assert isinstance(final.message, GroupFinal)
    assert final.message.members == ("a", "c", "d")
    follower.receive(final.message, "a", 0.2)
    assert isinstance(follower.outcome, Formed)


def test_a_committed_follower_waits_for_its_final_whoever_else_is_past() -> None:
    past: set[str] = set()
    follower = _follower("d", past)
    (invite,) = GroupAgreement("a", 0, FOUR, 0.0, config=CONFIG).start()
    invitation = invite.message
    assert isinstance(invitation, Invitation)
    assert follower.receive(invitation, "a", 0.1)
    past.update({"b", "c"})  # they went on in the leader's group: aggregating
    follower.poll(0.5)
    assert follower.outcome is None
    follower.receive(GroupFinal(0, invitation.group_id, "a", FOUR), "a", 0.6)
    assert isinstance(follower.outcome, Formed)


def test_a_leader_whose_invitees_are_past_dissolves_at_once() -> None:
    leader = GroupAgreement("a", 0, SIX, 0.0, config=CONFIG, past=_past("b", "c", "d"))
    (invite,) = leader.start()
    leader.receive(Acceptance(0, invite.message.group_id, "e"), "e", 0.05)
    # a, e and f could make 3, below the floor of 4: no reason to hold e and f
    (out,) = leader.poll(0.1)
    assert out.message.KIND == "dissolved"
    assert isinstance(leader.outcome, Alone)


def test_a_leader_finalises_once_only_past_invitees_are_missing() -> None:
    leader = GroupAgreement("a", 0, SIX, 0.0, config=CONFIG, past=_past("f"))
    (invite,) = leader.start()
    for peer in "bcd":
        leader.receive(Acceptance(0, invite.message.group_id, peer), peer, 0.05)
    assert leader.poll(0.1) == []  # e may still accept
    assert leader.receive(Acceptance(0, invite.message.group_id, "e"), "e", 0.15) == []
    (final,) = leader.poll(0.15)  # only f is missing, and f is past: no need to wait
    assert isinstance(final.message, GroupFinal)
    assert final.message.members == ("a", "b", "c", "d", "e")


def test_without_news_of_anyone_past_the_deadline_still_decides() -> None:
    follower = _follower("d", set())
    follower.poll(1.5)
    assert follower.outcome is None
    follower.poll(2.0)
    assert isinstance(follower.outcome, Alone)
    assert "no invitation arrived" in follower.outcome.reason


def test_an_invitation_dissolved_before_the_follower_could_accept_it_is_never_accepted() -> None:
    # b stands in for a silent a and dissolves at once (c and d are past, it believes);
    # the follower e holds b's invitation until its own stand-in time, and the dissolve
    # arrives first: found by the agreement's property tests once leaders could give up
    # early. Accepting it afterwards would leave e waiting for a final that never comes.
    members = ("a", "b", "c", "d", "e")  # floor 4
    follower = GroupAgreement("e", 0, members, 0.2, config=CONFIG)  # started 0.2 s later
    stand_in = GroupAgreement("b", 0, members, 0.0, config=CONFIG, past=_past("c", "d"))
    assert stand_in.poll(0.5) != []  # its stand-in time: it invites c, d and e
    invitation = stand_in.leader.invitation if stand_in.leader else None
    assert invitation is not None
    assert follower.receive(invitation, "b", 0.5) == []  # held: e's own clock is early
    (dissolved,) = stand_in.poll(0.5)
    assert dissolved.message.KIND == "dissolved"
    follower.receive(dissolved.message, "b", 0.51)
    assert follower.poll(0.8) == []  # its stand-in time has come: nothing to accept
    assert follower.book.committed is None
    follower.poll(2.3)
    assert isinstance(follower.outcome, Alone)


def _committed_follower(moved_on: set[str], past: set[str]) -> tuple[GroupAgreement, Invitation]:
    follower = GroupAgreement("d", 0, FOUR, 0.0, config=CONFIG, past=past.__contains__,
                              moved_on=moved_on.__contains__)
    (invite,) = GroupAgreement("a", 0, FOUR, 0.0, config=CONFIG).start()
    assert isinstance(invite.message, Invitation)
    assert follower.receive(invite.message, "a", 0.1)
    return follower, invite.message


def test_a_follower_stops_waiting_for_the_final_of_a_leader_in_a_later_round() -> None:
    # the leader was killed after d accepted, restarted and caught up to the next round:
    # its final for this round will never come (d waited a stretched window before)
    moved_on: set[str] = set()
    follower, _ = _committed_follower(moved_on, past=set())
    follower.poll(0.5)
    assert follower.outcome is None
    moved_on.add("a")
    follower.poll(0.6)
    assert isinstance(follower.outcome, Alone)
    assert "moved on to a later round" in follower.outcome.reason


def test_a_leader_aggregating_this_round_is_waited_for_its_final_may_be_on_its_way() -> None:
    follower, invitation = _committed_follower(moved_on=set(), past={"a", "b", "c"})
    follower.poll(0.5)
    assert follower.outcome is None
    follower.receive(GroupFinal(0, invitation.group_id, "a", FOUR), "a", 0.6)
    assert isinstance(follower.outcome, Formed)
