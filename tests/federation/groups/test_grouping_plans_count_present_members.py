"""Plans count present members; a leader stops waiting for members it sees down (#27).

The daemon plans over members heard within a few down times (``present``), so a
heartbeat that arrives late does not reshuffle everyone's plan. A leader invites its
whole planned group — a member whose heartbeats are late is usually alive — and from
the rank-1 stand-in time on (half the window) it finalises without the invitees it sees
down once the acceptors meet the floor, so a member that crashed a minute ago does not
hold its group to the end of the window.
"""

from __future__ import annotations

from fedswarm.federation.groups.agreement import AgreementConfig, Formed, GroupAgreement
from fedswarm.federation.groups.messages import Acceptance, GroupFinal, Invitation
from fedswarm.federation.groups.plan import plan_groups

CONFIG = AgreementConfig(invite_window=1.0, final_grace=1.0)  # stand-in time 0.5
PRESENT = ("a", "b", "c", "d", "e", "f")  # six: one group of everyone, floor 4


def _invitation(agreement: GroupAgreement) -> Invitation:
    (outgoing,) = agreement.start()
    assert isinstance(outgoing.message, Invitation)
    return outgoing.message


def _leader_with_acceptances(up: tuple[str, ...], acceptors: str) -> GroupAgreement:
    leader = GroupAgreement("a", 0, PRESENT, 0.0, config=CONFIG, up_now=lambda: up)
    invitation = _invitation(leader)
    assert invitation.members == PRESENT  # everyone planned is invited, up or not
    for peer in acceptors:
        assert leader.receive(Acceptance(0, invitation.group_id, peer), peer, 0.1) == []
    return leader


def _final_members(sent) -> tuple[str, ...]:
    (out,) = sent
    assert isinstance(out.message, GroupFinal)
    return out.message.members


def test_a_leader_stops_waiting_for_a_member_it_sees_down_after_half_the_window() -> None:
    leader = _leader_with_acceptances(("a", "b", "c", "d", "e"), "bcde")
    assert leader.poll(0.45) == []  # before the stand-in time: f may still answer
    assert _final_members(leader.poll(0.55)) == ("a", "b", "c", "d", "e")


def test_a_leader_waits_out_the_window_for_a_member_it_sees_up() -> None:
    leader = _leader_with_acceptances(PRESENT, "bcde")
    assert leader.poll(0.9) == []
    assert _final_members(leader.poll(1.0)) == ("a", "b", "c", "d", "e")


def test_a_leader_below_the_floor_waits_out_the_window_even_for_members_it_sees_down() -> None:
    leader = _leader_with_acceptances(("a", "b", "c"), "bc")
    assert leader.poll(0.9) == []
    assert leader.poll(1.0)[0].message.KIND == "dissolved"


def test_a_member_whose_heartbeats_are_late_is_still_invited_and_joins() -> None:
    leader = _leader_with_acceptances(("a", "b", "c", "d", "e"), "bcde")
    gid = _invitation(GroupAgreement("a", 0, PRESENT, 0.0, config=CONFIG)).group_id
    assert _final_members(leader.receive(Acceptance(0, gid, "f"), "f", 0.3)) == PRESENT


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


def test_followers_hold_the_final_a_leader_sent_without_a_member_it_saw_down() -> None:
    up = ("a", "b", "c", "d", "e")
    agreements = {peer: GroupAgreement(peer, 0, PRESENT, 0.0, config=CONFIG,
                                       up_now=lambda: up) for peer in up}
    pending = [("a", r, out.message) for out in agreements["a"].start() for r in out.recipients]
    for now in (0.1, 0.6):  # acceptances at 0.1; the leader's poll at 0.6 finalises
        pending += [("a", r, out.message) for out in agreements["a"].poll(now)
                    for r in out.recipients]
        while pending:
            sender, recipient, message = pending.pop(0)
            if recipient in agreements:  # f is down: it hears nothing
                for out in agreements[recipient].receive(message, sender, now):
                    pending += [(recipient, r, out.message) for r in out.recipients]
    outcomes = {peer: agreement.outcome for peer, agreement in agreements.items()}
    assert all(isinstance(o, Formed) and o.members == up for o in outcomes.values()), outcomes
