"""Group agreement: safety under inconsistent views, dropped peers, loss and reordering.

A small in-test "world" runs the real ``GroupAgreement`` state machine of every live
peer and delivers messages in an order hypothesis chooses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedswarm.federation.groups.agreement import (
    AgreementConfig,
    Alone,
    Formed,
    GroupAgreement,
    GroupFollower,
    GroupLeader,
    InvitationBook,
)
from fedswarm.federation.groups.messages import Acceptance, GroupFinal, GroupMessage, Invitation
from fedswarm.federation.groups.plan import group_id, plan_groups
from hypothesis import given, settings
from hypothesis import strategies as st

CONFIG = AgreementConfig(invite_window=1.0, final_grace=1.0)
NAMES = ["QmA", "QmB", "QmC", "QmD", "QmE", "QmF", "QmG", "QmH", "QmJ", "QmK", "QmL"]


@dataclass
class World:
    agreements: dict[str, GroupAgreement]
    pending: list[tuple[str, str, GroupMessage]] = field(default_factory=list)
    finals: list[GroupFinal] = field(default_factory=list)
    acceptances: set[tuple[str, str]] = field(default_factory=set)  # (peer, group id)

    def post(self, sender: str, outgoing) -> None:
        for out in outgoing:
            if isinstance(out.message, GroupFinal):
                self.finals.append(out.message)
            if isinstance(out.message, Acceptance):
                self.acceptances.add((out.message.peer, out.message.group_id))
            for recipient in out.recipients:
                self.pending.append((sender, recipient, out.message))

    def deliver(self, index: int, now: float) -> None:
        sender, recipient, message = self.pending.pop(index)
        agreement = self.agreements.get(recipient)
        if agreement is not None:  # a dropped peer hears nothing
            self.post(recipient, agreement.receive(message, sender, now))

    def poll(self, now: float) -> None:
        for peer, agreement in self.agreements.items():
            self.post(peer, agreement.poll(now))


@st.composite
def scenarios(draw):
    everyone = draw(st.lists(st.sampled_from(NAMES), min_size=3, max_size=10, unique=True))
    live = [peer for peer in everyone if draw(st.booleans()) or draw(st.booleans())]
    views = {}
    for peer in live:
        if draw(st.booleans()):
            views[peer] = list(everyone)
        else:
            views[peer] = [p for p in everyone if p == peer or draw(st.booleans())]
    starts = {peer: draw(st.sampled_from([0.0, 0.2, 0.5])) for peer in live}
    round = draw(st.integers(0, 5))
    # whom each peer sees up now: its whole (present) view, or part of it (a leader stops
    # waiting for invitees it sees down from half the window on; a stand-in invites only
    # members it sees up)
    ups = {peer: view if draw(st.booleans()) else [p for p in view if draw(st.booleans())]
           for peer, view in views.items()}
    # whom each peer believes past this round's grouping (rule 7): true or not, since a
    # heartbeat can be stale or a lie, so the beliefs are drawn freely
    pasts = {peer: frozenset(p for p in everyone
                             if p != peer and draw(st.booleans()) and draw(st.booleans()))
             for peer in live}
    return everyone, live, views, starts, round, ups, pasts


def _world(live, views, starts, round, ups=None, pasts=None, moved_on=False) -> World:
    """``moved_on``: the ``pasts`` beliefs also say who moved on to a later round, which
    makes a follower that accepted that leader give up on its final (a dropout for
    secure aggregation, so only the no-overlap property holds then)."""
    world = World(
        {
            peer: GroupAgreement(
                peer, round, views[peer], starts[peer], config=CONFIG,
                up_now=None if ups is None else (lambda up=tuple(ups[peer]): up),
                past=None if pasts is None else pasts[peer].__contains__,
                moved_on=pasts[peer].__contains__ if pasts is not None and moved_on else None,
            )
            for peer in live
        }
    )
    for peer, agreement in world.agreements.items():
        world.post(peer, agreement.start())
    return world


def _check_safety(world: World) -> None:
    outcomes = {peer: agreement.outcome for peer, agreement in world.agreements.items()}
    assert all(outcome is not None for outcome in outcomes.values())
    formed = {peer: o for peer, o in outcomes.items() if isinstance(o, Formed)}
    for peer, outcome in formed.items():
        assert peer in outcome.members
        assert len(outcome.members) >= 3
        for other, other_outcome in formed.items():
            shared = set(outcome.members) & set(other_outcome.members)
            if shared:  # overlapping groups must be the very same group
                assert outcome.members == other_outcome.members, (peer, other)
        assert any(
            final.members == outcome.members and final.leader == outcome.leader
            for final in world.finals
        )
    seen: set[str] = set()
    for final in world.finals:
        assert len(final.members) >= 3
        assert not seen & set(final.members), "a peer is in two final groups"
        seen |= set(final.members)
        for member in final.members:
            if member != final.leader:
                assert (member, final.group_id) in world.acceptances


def _check_whole_groups(world: World) -> None:
    """Safety, and no half-formed group: every member of a final holds that final."""
    _check_safety(world)
    for final in world.finals:
        for member in final.members:
            outcome = world.agreements[member].outcome
            assert isinstance(outcome, Formed)
            assert outcome.members == final.members



@settings(max_examples=250, deadline=None)
@given(scenario=scenarios(), data=st.data())
def test_timely_delivery_in_any_order_forms_consistent_whole_groups(scenario, data) -> None:
    _, live, views, starts, round, ups, pasts = scenario
    world = _world(live, views, starts, round, ups, pasts)
    while world.pending:  # invitations and acceptances, before any deadline
        world.deliver(data.draw(st.integers(0, len(world.pending) - 1)), 0.5)
    world.poll(1.5)  # every leader's window has closed
    while world.pending:
        world.deliver(data.draw(st.integers(0, len(world.pending) - 1)), 1.5)
    world.poll(3.0)
    _check_whole_groups(world)


@settings(max_examples=250, deadline=None)
@given(scenario=scenarios(), data=st.data())
def test_timely_delivery_with_stand_ins_for_silent_leaders_forms_consistent_whole_groups(
    scenario, data
) -> None:
    _, live, views, starts, round, ups, pasts = scenario
    world = _world(live, views, starts, round, ups, pasts)
    # every rank-1 and rank-2 stand-in time of every start (0, 0.2, 0.5), windows open
    for now in (0.0, 0.5, 0.7, 0.75, 0.95, 1.0, 1.25):
        world.poll(now)
        while world.pending:
            world.deliver(data.draw(st.integers(0, len(world.pending) - 1)), now)
    world.poll(1.6)  # every window has closed
    while world.pending:
        world.deliver(data.draw(st.integers(0, len(world.pending) - 1)), 1.6)
    world.poll(3.0)
    _check_whole_groups(world)


@settings(max_examples=250, deadline=None)
@given(scenario=scenarios(), data=st.data())
def test_loss_late_delivery_and_reordering_never_overlap_groups(scenario, data) -> None:
    _, live, views, starts, round, ups, pasts = scenario
    world = _world(live, views, starts, round, ups, pasts, moved_on=data.draw(st.booleans()))
    now = 0.5
    for _ in range(200):
        if now > 3.0 and not world.pending:
            break
        action = data.draw(st.sampled_from(["deliver", "deliver", "lose", "tick"]))
        if action == "tick" or not world.pending:
            now += data.draw(st.sampled_from([0.1, 0.4, 0.9]))
            world.poll(now)
            continue
        index = data.draw(st.integers(0, len(world.pending) - 1))
        if action == "lose":
            world.pending.pop(index)
        else:
            world.deliver(index, now)
    world.pending.clear()
    world.poll(10.0)
    _check_safety(world)


@settings(max_examples=60, deadline=None)
@given(everyone=st.lists(st.sampled_from(NAMES), min_size=3, max_size=11, unique=True),
       round=st.integers(0, 8))
def test_equal_views_and_no_faults_form_exactly_the_planned_groups(everyone, round) -> None:
    world = _world(everyone, {p: everyone for p in everyone}, dict.fromkeys(everyone, 0.0), round)
    while world.pending:
        world.deliver(0, 0.5)
    world.poll(3.0)
    formed = {world.agreements[p].outcome.members for p in everyone}  # type: ignore[union-attr]
    assert formed == set(plan_groups(everyone, round))


def test_a_peer_accepts_only_the_first_of_two_invitations() -> None:
    book = InvitationBook("c", 1)
    follower = GroupFollower("c", 1, book, final_deadline=10.0)
    first = Invitation(1, group_id(1, ["a", "c", "d"]), "a", ("a", "c", "d"))
    second = Invitation(1, group_id(1, ["b", "c", "e"]), "b", ("b", "c", "e"))
    assert follower.on_invitation(first, "a", 0.0) is not None
    assert follower.on_invitation(second, "b", 0.0) is None
    assert follower.on_invitation(first, "a", 0.1) is not None  # a resend is re-acknowledged
    assert book.committed == first


def test_invitation_from_a_non_lowest_leader_or_forged_sender_is_ignored() -> None:
    follower = GroupFollower("c", 1, InvitationBook("c", 1), final_deadline=10.0)
    members = ("a", "b", "c")
    not_lowest = Invitation(1, group_id(1, members), "b", members)
    assert follower.on_invitation(not_lowest, "b", 0.0) is None
    honest = Invitation(1, group_id(1, members), "a", members)
    assert follower.on_invitation(honest, "mallory", 0.0) is None


def test_leader_dissolves_a_group_when_fewer_than_three_accept() -> None:
    members = ("a", "b", "c", "d")
    leader = GroupLeader("a", 2, members, InvitationBook("a", 2), invite_deadline=1.0)
    leader.start()
    leader.on_acceptance(Acceptance(2, leader.invitation.group_id, "b"), "b", 0.5)
    sent = leader.poll(1.0)
    assert isinstance(leader.outcome, Alone)
    assert sent[0].message.KIND == "dissolved"


def test_leader_finalises_early_once_everyone_accepted() -> None:
    members = ("a", "b", "c")
    leader = GroupLeader("a", 2, members, InvitationBook("a", 2), invite_deadline=1.0)
    gid = leader.invitation.group_id
    assert leader.on_acceptance(Acceptance(2, gid, "b"), "b", 0.1) == []
    sent = leader.on_acceptance(Acceptance(2, gid, "c"), "c", 0.2)
    assert isinstance(sent[0].message, GroupFinal)
    assert sent[0].message.members == members
    assert isinstance(leader.outcome, Formed)


def test_acceptance_after_the_window_is_not_counted() -> None:
    members = ("a", "b", "c", "d")
    leader = GroupLeader("a", 2, members, InvitationBook("a", 2), invite_deadline=1.0)
    gid = leader.invitation.group_id
    leader.on_acceptance(Acceptance(2, gid, "b"), "b", 0.1)
    leader.on_acceptance(Acceptance(2, gid, "c"), "c", 0.2)
    sent = leader.on_acceptance(Acceptance(2, gid, "d"), "d", 1.5)
    assert isinstance(sent[0].message, GroupFinal)
    assert sent[0].message.members == ("a", "b", "c")


def test_a_follower_left_out_of_the_final_is_alone() -> None:
    members = ("a", "b", "c", "d")
    gid = group_id(2, members)
    follower = GroupFollower("d", 2, InvitationBook("d", 2), final_deadline=5.0)
    follower.on_invitation(Invitation(2, gid, "a", members), "a", 0.0)
    outcome = follower.on_final(GroupFinal(2, gid, "a", ("a", "b", "c")), "a", 1.0)
    assert isinstance(outcome, Alone)


def test_a_peer_with_too_small_a_view_is_alone_at_once() -> None:
    agreement = GroupAgreement("a", 0, ["a", "b"], 0.0, config=CONFIG)
    assert isinstance(agreement.outcome, Alone)
    assert agreement.start() == []
