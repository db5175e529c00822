"""Plans count present members; leaders invite the members they see up (issue #27).

The daemon plans over members heard within a few down times (``present``), so a
heartbeat that arrives late does not reshuffle everyone's plan, and a leader invites
only those of its planned group it sees up *now*, so a member that crashed a minute ago
does not hold its group to the end of the invitation window.
"""

from __future__ import annotations

from fedswarm.federation.groups.agreement import AgreementConfig, Formed, GroupAgreement
from fedswarm.federation.groups.messages import Acceptance, GroupFinal, Invitation
from fedswarm.federation.groups.plan import plan_groups

CONFIG = AgreementConfig(invite_window=1.0, final_grace=1.0)
PRESENT = ("a", "b", "c", "d", "e", "f")  # six: one group of everyone, floor 4


def _invitation(agreement: GroupAgreement) -> Invitation:
    (outgoing,) = agreement.start()
    assert isinstance(outgoing.message, Invitation)
    return outgoing.message


def test_a_leader_invites_only_the_planned_members_it_sees_up() -> None:
    leader = GroupAgreement("a", 0, PRESENT, 0.0, config=CONFIG,
                            up_now=lambda: ("a", "b", "c", "d", "e"))
    assert _invitation(leader).members == ("a", "b", "c", "d", "e")


def test_a_leader_invites_the_whole_planned_group_when_too_few_are_up() -> None:
    leader = GroupAgreement("a", 0, PRESENT, 0.0, config=CONFIG, up_now=lambda: ("b", "c"))
    assert _invitation(leader).members == PRESENT


def test_a_follower_that_still_counts_a_silent_member_accepts_the_smaller_invitation() -> None:
    # b's view still lists f (heard from 30 s ago), a's up view does not: same plan, and
    # a's invitation without f is within b's planned group and above its floor of 4.
    leader = GroupAgreement("a", 0, PRESENT, 0.0, config=CONFIG,
                            up_now=lambda: ("b", "c", "d", "e"))
    invitation = _invitation(leader)
    follower = GroupAgreement("b", 0, PRESENT, 0.0, config=CONFIG)
    (reply,) = follower.receive(invitation, "a", 0.1)
    assert isinstance(reply.message, Acceptance)


def test_a_group_forms_at_once_without_waiting_for_a_member_seen_down() -> None:
    up = ("a", "b", "c", "d", "e")
    agreements = {peer: GroupAgreement(peer, 0, PRESENT, 0.0, config=CONFIG,
                                       up_now=lambda: up) for peer in up}
    pending = [("a", recipient, message) for out in agreements["a"].start()
               for recipient, message in ((r, out.message) for r in out.recipients)]
    while pending:  # every message delivered at 0.1 s, long before the 1 s window ends
        sender, recipient, message = pending.pop(0)
        for out in agreements[recipient].receive(message, sender, 0.1):
            pending += [(recipient, r, out.message) for r in out.recipients]
    outcomes = {peer: agreement.outcome for peer, agreement in agreements.items()}
    assert all(isinstance(o, Formed) and o.members == up for o in outcomes.values()), outcomes


def test_members_whose_up_views_differ_but_present_views_agree_plan_the_same_groups() -> None:
    # 32 members; each of the first eight sees a different member down (a late
    # heartbeat), all 32 present: planning over the up views would give eight different
    # grids, planning over the present view gives one.
    present = [f"peer{i:02d}" for i in range(32)]
    for round in range(3):
        expected = plan_groups(present, round)
        up_views = {me: [p for p in present if p != present[(i + 1) % 32]]
                    for i, me in enumerate(present[:8])}
        assert len({tuple(plan_groups(view, round)) for view in up_views.values()}) == 8
        for me, up in up_views.items():
            agreement = GroupAgreement(me, round, present, 0.0, config=CONFIG,
                                       up_now=lambda up=up: up)
            assert agreement.planned in expected


def test_a_final_from_a_leader_that_invited_its_up_members_is_held_by_each_of_them() -> None:
    leader = GroupAgreement("a", 0, PRESENT, 0.0, config=CONFIG,
                            up_now=lambda: ("a", "b", "c", "d"))
    invitation = _invitation(leader)
    followers = {peer: GroupAgreement(peer, 0, PRESENT, 0.0, config=CONFIG)
                 for peer in ("b", "c", "d")}
    finals = []
    for peer, follower in followers.items():
        (reply,) = follower.receive(invitation, "a", 0.1)
        finals += leader.receive(reply.message, peer, 0.2)
    (final,) = finals
    assert isinstance(final.message, GroupFinal) and final.message.members == ("a", "b", "c", "d")
    for peer, follower in followers.items():
        follower.receive(final.message, "a", 0.3)
        assert isinstance(follower.outcome, Formed), peer
