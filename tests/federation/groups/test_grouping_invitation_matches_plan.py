"""A follower accepts only an invitation that matches its own plan (issue #19).

The attack: a member whose peer id sorts lowest invites a victim to a "group" of
itself, the victim and a made-up (or absent) peer id, or of itself, a colluder and the
victim. The rule (``agreement.PlanMatch``): every invited peer is a roster member
present in the follower's view, the members are a subset of the group the follower's own
``plan_groups`` gives it, the inviter leads that planned group, and the invitation (and
then the final) names at least ``contributor_floor`` of that planned group. An
invitation naming a peer the follower has not heard from yet waits and is judged again as
its view grows.
"""

from __future__ import annotations

from fedswarm.federation.groups.agreement import (
    AgreementConfig,
    Alone,
    Formed,
    GroupAgreement,
    GroupFollower,
    InvitationBook,
    PlanMatch,
)
from fedswarm.federation.groups.messages import Acceptance, GroupFinal, GroupMessage, Invitation
from fedswarm.federation.groups.plan import group_id, group_of, leader_of, plan_groups
from fedswarm.federation.round import MIN_GROUP_SIZE, contributor_floor

CONFIG = AgreementConfig(invite_window=1.0, final_grace=1.0)


def _invite(round: int, members: tuple[str, ...]) -> Invitation:
    return Invitation(round, group_id(round, members), min(members), members)


def _follower(me: str, view: list[str], round: int = 1) -> GroupFollower:
    return GroupFollower(me, round, InvitationBook(me, round), 10.0,
                         admit=PlanMatch(me, round, 4, b"", lambda: view))


def test_invitation_naming_a_phantom_member_never_commits_the_victim() -> None:
    victim = GroupAgreement("c", 1, ["a", "b", "c", "d"], 0.0, config=CONFIG)
    assert victim.planned == ("a", "b", "c", "d")  # one group of everyone
    phantom = _invite(1, ("a", "c", "zz-made-up"))
    assert victim.receive(phantom, "a", 0.1) == []
    assert victim.book.committed is None
    assert phantom.group_id in victim.follower.waiting  # re-checked, never accepted
    assert victim.poll(0.5) == []
    # A final for that group from the attacker cannot form it either: c never committed.
    victim.receive(GroupFinal(1, phantom.group_id, "a", phantom.members), "a", 0.2)
    victim.poll(5.0)
    assert isinstance(victim.outcome, Alone)


def test_a_waiting_invitation_is_accepted_once_the_newcomer_is_seen() -> None:
    seen = ["a", "b", "c", "d"]
    agreement = GroupAgreement("c", 1, seen, 0.0, config=CONFIG, view_now=lambda: seen)
    invitation = _invite(1, ("a", "b", "c", "d", "e"))  # a already sees the newcomer e
    assert agreement.receive(invitation, "a", 0.1) == []
    assert agreement.book.committed is None
    seen.append("e")  # e's first heartbeat reaches c
    sent = agreement.poll(0.3)
    assert [(out.recipients, out.message) for out in sent] == [
        (("a",), Acceptance(1, invitation.group_id, "c", min_members=4))]
    assert agreement.book.committed == invitation


def test_invitation_from_a_peer_that_does_not_lead_the_planned_group_is_not_accepted() -> None:
    # b is the lowest id of its own invitation but a leads c's planned group: b could
    # only be a stand-in, and a follower without a stand-in time never accepts one.
    follower = _follower("c", ["a", "b", "c", "d"])
    assert follower.on_invitation(_invite(1, ("b", "c", "d")), "b", 0.0) is None
    assert follower.recheck(5.0) == []
    assert follower.book.committed is None
    assert isinstance(follower.poll(10.0), Alone)


def test_a_hostile_leader_cannot_choose_who_averages_with_the_victim() -> None:
    everyone = [f"Qm{i:02d}" for i in range(16)]  # a 4 x 4 grid: four groups of four
    plan = plan_groups(everyone, 0)
    mine = plan[0]
    me, colluder = mine[1], plan[1][-1]
    members = tuple(sorted({mine[0], me, colluder}))
    agreement = GroupAgreement(me, 0, everyone, 0.0, config=CONFIG)
    assert agreement.receive(_invite(0, members), leader_of(members), 0.1) == []
    assert agreement.book.committed is None
    assert "other groups" in agreement.follower.refused[0][1]
    # ... while the planned group itself is accepted.
    assert agreement.receive(_invite(0, mine), leader_of(mine), 0.2) != []


def test_a_peer_seeing_too_few_peers_accepts_nothing() -> None:
    follower = _follower("c", ["b", "c"])
    assert follower.on_invitation(_invite(1, ("a", "b", "c")), "a", 0.0) is None
    assert follower.book.committed is None and follower.waiting


def _run(views: dict[str, list[str]], round: int) -> dict[str, object]:
    agreements = {p: GroupAgreement(p, round, v, 0.0, config=CONFIG) for p, v in views.items()}
    pending: list[tuple[str, str, GroupMessage]] = []

    def post(sender: str, outgoing) -> None:
        for out in outgoing:
            pending.extend((sender, r, out.message) for r in out.recipients)

    for peer, agreement in agreements.items():
        post(peer, agreement.start())
    # Invitations arrive at once (at 0.5 they would arrive after the members' stand-in
    # time and the stand-ins would lead), then before and after every window closes.
    for now in (0.0, 0.5, 1.5):
        for peer, agreement in agreements.items():
            post(peer, agreement.poll(now))
        while pending:
            sender, recipient, message = pending.pop(0)
            if recipient in agreements:
                post(recipient, agreements[recipient].receive(message, sender, now))
    for agreement in agreements.values():
        agreement.poll(3.0)
    return {p: a.outcome for p, a in agreements.items()}


def test_a_follower_that_has_not_heard_of_a_newcomer_leaves_it_out() -> None:
    # The leader sees e, d does not yet: d's invitation waits (e is not up in its view)
    # and the others form the group without d.
    everyone = ["a", "b", "c", "d", "e"]
    views = {p: everyone for p in everyone}
    views["d"] = ["a", "b", "c", "d"]
    outcomes = _run(views, 3)
    for peer in "abce":
        outcome = outcomes[peer]
        assert isinstance(outcome, Formed), (peer, outcome)
        assert outcome.members == ("a", "b", "c", "e")
    assert isinstance(outcomes["d"], Alone)


def test_equal_views_on_a_grid_form_every_planned_group() -> None:
    everyone = [f"Qm{i:02d}" for i in range(16)]
    for round in range(3):
        outcomes = _run({p: everyone for p in everyone}, round)
        for peer in everyone:
            outcome = outcomes[peer]
            assert isinstance(outcome, Formed)
            assert outcome.members == group_of(peer, plan_groups(everyone, round))


def test_the_floor_keeps_two_honest_members_in_every_sum_while_fewer_than_half_collude(
) -> None:
    assert [contributor_floor(g) for g in range(3, 10)] == [3, 3, 4, 4, 5, 5, 6]
    for planned in range(MIN_GROUP_SIZE, 40):
        floor = contributor_floor(planned)
        assert MIN_GROUP_SIZE <= floor <= planned
        colluders = (planned - 1) // 2  # the most that are still fewer than half
        assert floor - colluders >= 2, planned


def test_an_invitation_shrunk_to_the_leader_a_colluder_and_the_victim_is_refused() -> None:
    # Five members up: one planned group of everyone. The leader a and its colluder b
    # invite only the victim c: their sum with c would give c's update away.
    everyone = ["a", "b", "c", "d", "e"]
    victim = GroupAgreement("c", 1, everyone, 0.0, config=CONFIG)
    assert victim.planned == tuple(everyone)
    assert victim.receive(_invite(1, ("a", "b", "c")), "a", 0.1) == []
    assert victim.book.committed is None
    assert "at least 4 must be asked" in victim.follower.refused[0][1]
    # Leaving out one planned member is still a group the victim joins (4 of 5).
    assert victim.receive(_invite(1, ("a", "b", "c", "d")), "a", 0.2) != []


def test_a_final_shrunk_after_a_complete_invitation_leaves_the_victim_alone() -> None:
    everyone = ("a", "b", "c", "d", "e")
    victim = GroupAgreement("c", 1, list(everyone), 0.0, config=CONFIG)
    invitation = _invite(1, everyone)
    assert victim.receive(invitation, "a", 0.1) != []  # accepted: it is the plan
    victim.receive(GroupFinal(1, invitation.group_id, "a", ("a", "b", "c")), "a", 0.2)
    assert isinstance(victim.outcome, Alone)
    assert "fewer than the 4" in victim.outcome.reason


def test_a_final_that_keeps_the_floor_forms_the_group_and_carries_it() -> None:
    everyone = ("a", "b", "c", "d", "e")
    victim = GroupAgreement("c", 1, list(everyone), 0.0, config=CONFIG)
    invitation = _invite(1, everyone)
    victim.receive(invitation, "a", 0.1)
    victim.receive(GroupFinal(1, invitation.group_id, "a", ("a", "b", "c", "e")), "a", 0.2)
    assert isinstance(victim.outcome, Formed)
    assert victim.outcome.min_members == 4  # secure aggregation gets it as its floor


def test_an_honest_leader_with_acceptances_below_its_floor_dissolves() -> None:
    everyone = ["a", "b", "c", "d", "e"]
    leader = GroupAgreement("a", 1, everyone, 0.0, config=CONFIG)
    invitation = leader.start()[0].message
    assert isinstance(invitation, Invitation)
    for peer in ("b", "c"):
        leader.receive(Acceptance(1, invitation.group_id, peer), peer, 0.1)
    sent = leader.poll(CONFIG.invite_window + 0.1)
    assert isinstance(leader.outcome, Alone) and "fewer than 4" in leader.outcome.reason
    assert sent and not isinstance(sent[0].message, GroupFinal)
