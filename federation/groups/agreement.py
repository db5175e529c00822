"""Agreeing on groups when peers' membership views differ.

``plan_groups`` is deterministic, but two peers with different views (one has not yet
heard of a newcomer, another still lists a peer that left) can plan different groups.
Running secure aggregation on half-agreed groups would waste a round or, worse, let a
peer count in two groups. The rule that prevents this:

1. The leader of each planned group (its lowest peer id) sends an ``Invitation``
   naming the round, the group id and the members.
2. A peer commits to exactly one invitation per round, the first valid one naming it
   (a leader is committed to its own from the start), and answers with an
   ``Acceptance``. Further invitations that round are ignored. Valid means it matches
   the peer's own plan (``PlanMatch``, issue #19): every invited peer is a roster
   member present in the peer's view (the daemon: heard from within a few down times,
   the set its plans count), and the members are a subset of the group its own
   ``plan_groups`` gives it, led by that group's leader (or by a stand-in, rule 5), and
   at least ``contributor_floor`` of that planned group (more than half, plus one). An
   invitation naming a peer it has not heard from yet (a newcomer the leader heard of
   first) waits and is checked again as heartbeats arrive, until the window closes; one
   naming a made-up or long-gone peer therefore never commits anyone, and a hostile leader
   cannot choose who averages with a victim: the plan, which no single member controls,
   does.
3. The leader finalises when every invitee has accepted or when its invitation window
   closes, whichever comes first: the members that accepted in time, plus itself,
   form the group. With 3 or more it sends ``GroupFinal`` to every invitee (so a late
   acceptor learns it is out); with fewer it sends ``GroupDissolved``.
   A leader with fewer acceptances than its own plan's ``contributor_floor`` dissolves.
4. A follower is in a group only once it holds a ``GroupFinal`` that names it, from
   the leader it accepted, and names at least the ``contributor_floor`` of the
   follower's own planned group: a hostile leader that invites everyone and then
   finalises with just itself, a colluder and the victim is refused. If no such final
   arrives before its own deadline (the invitation window plus a grace period, or, once
   it committed, a stretched window plus the grace after it committed: the leader's
   window runs from the leader's own round start), it is alone this round.
5. Stand-in leader (issue #27). A planned leader that dropped out (crashed but still
   listed up, or never started the round) sends nothing, and without a stand-in its
   whole planned group would train alone. The member of rank ``k`` of a planned group
   (its ``k``-th lowest id; the leader is rank 0) stands in at its own stand-in time
   ``AgreementConfig.stand_in_time(k)`` if by then it has committed to no invitation,
   and if ``planned[k:]`` still holds the ``contributor_floor`` of the planned group: it
   leads an invitation to those of ``planned[k:]`` it still sees up, if they meet that
   floor, like any leader (same messages, same window end). A follower accepts an
   invitation from rank ``k > 0`` of its own planned group under every rule of 2 (the
   members a subset of that group, at least its floor; the inviter the lowest of them,
   so exactly the members ranked before it are left out), and only once its *own*
   stand-in time for rank ``k`` has passed; until then it
   holds it, so an invitation from a higher-ranked member that arrives first still
   wins (commit-once), and a hostile member cannot use a stand-in to cut a live honest
   leader out. Both sides also wait while a member ranked before ``k`` is still
   ``awaited`` (the daemon: a fresh heartbeat says it works on this round or an
   earlier one): a slow but live leader is waited for as before, only a crashed or
   departed one is replaced. The stand-in times grow with rank (each takes half the
   time left by default), so when the leader and the next member are both silent the
   one after them stands in, if the floor allows.
6. Members past the round (issue #27). A member whose heartbeat says it has left this
   round's grouping (a later round, or a phase after grouping: ``past``) will neither
   invite nor accept. An uncommitted follower whose planned group has so many such
   members that the rest could not reach the floor goes alone at once; a leader stops
   waiting for past invitees and dissolves at once when the floor is out of reach. A
   follower that accepted a leader gives up on its final once that leader is in a later
   round (``moved_on``; a later phase of this round does not count). A follower
   remembers a dissolve that arrives before it committed (a leader that gives up early
   can dissolve before a held stand-in invitation becomes acceptable) and never accepts
   that invitation afterwards.

Consequences: a peer is in at most one final group (it commits once, whether to a
leader or a stand-in; a final only lists peers that committed to that leader); every
final group has 3 or more members, each of whom accepted; and every member that
receives the final holds the same member list. A member whose final is lost is exactly
a dropout for secure aggregation, which already tolerates those. Peers left alone keep
training and join a group next round.

Everything here is a pure state machine: methods take decoded messages, the
authenticated sender and the current time, and return decisions and messages to
send. No clocks, sockets or crypto.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..round import MIN_GROUP_SIZE, contributor_floor
from .messages import Acceptance, GroupDissolved, GroupFinal, GroupMessage, Invitation
from .plan import DEFAULT_GROUP_SIZE, group_id, leader_of, planned_group


@dataclass(frozen=True)
class AgreementConfig:
    """Timing of one agreement, in seconds from the round's start on each peer's clock."""

    invite_window: float = 5.0
    """How long a leader waits for acceptances before finalising with whoever accepted."""

    final_grace: float = 5.0
    """How long after the invitation window a follower waits for the final.

    Must cover clock skew plus one message delay, or a follower may give up on a
    group its leader has just finalised (it then counts as a dropout there).
    """

    stand_in_after: float = 0.5
    """Fraction of the invitation window a member waits for its leader before standing in.

    Rank ``k`` of a planned group stands in at ``stand_in_time(k)``: rank 1 after this
    fraction of the window, each further rank after the same fraction of the time left,
    so every stand-in still has part of the window to gather acceptances. Peers start a
    round when their training ends, so clocks are skewed by training time: a live
    leader that starts the round more than ``stand_in_after`` of the window after its
    members loses its group to the stand-in (and trains alone), while members that start
    more than the rest of the window after the stand-in miss its group. Half balances
    the two.
    """

    late_wait: float = 1.0
    """How far, as a fraction of the invitation window, a leader's window and a follower's
    deadline stretch while a member they wait for is still finishing an earlier round.

    Peers start a round when their last one ends, and a group whose secure aggregation
    waited out a dropout ends it up to a round deadline later than the others. Its
    members then reach the next round after the other groups' leaders have closed their
    windows, and both halves keep missing each other: among 16 daemons with faulty
    links, one slow group in round 4 left 11 of 16 alone in round 5. A member whose
    signed heartbeat names an earlier round is alive and on its way (``behind``); it is
    waited for, at most this much longer. A member that pretends to be behind can delay
    its groups by this much, no more.
    """

    def __post_init__(self) -> None:
        if self.invite_window <= 0 or self.final_grace <= 0:
            raise ValueError("invite_window and final_grace must be > 0")
        if self.late_wait < 0:
            raise ValueError(f"late_wait must be >= 0 (got {self.late_wait})")
        if not 0.0 < self.stand_in_after < 1.0:
            raise ValueError(
                f"stand_in_after must lie strictly between 0 and 1 (got {self.stand_in_after})")

    def stand_in_time(self, rank: int) -> float:
        """Seconds after its round start at which rank ``rank`` of a planned group may lead
        (and its members accept it) without an invitation from a lower rank; 0 for the
        leader (rank 0), always less than ``invite_window``."""
        if rank < 0:
            raise ValueError(f"rank must be >= 0 (got {rank})")
        return self.invite_window * (1.0 - (1.0 - self.stand_in_after) ** rank)


@dataclass(frozen=True)
class Outgoing:
    """A message to send to each of ``recipients`` (signing and transport by the caller)."""

    recipients: tuple[str, ...]
    message: GroupMessage


@dataclass(frozen=True)
class Formed:
    """This peer aggregates in ``round`` with ``members`` (sorted, including itself)."""

    round: int
    members: tuple[str, ...]
    leader: str
    invitation_id: str
    min_members: int = MIN_GROUP_SIZE
    """This peer's ``contributor_floor``: secure aggregation reveals no smaller sum."""

    @property
    def final_id(self) -> str:
        """Names the group actually formed; bind it into the secure-aggregation messages."""
        return group_id(self.round, self.members)


@dataclass(frozen=True)
class Alone:
    """This peer forms no group this round and keeps training; ``reason`` is for logs."""

    reason: str


Outcome = Formed | Alone


@dataclass(frozen=True)
class Verdict:
    """What a follower makes of an invitation: accept it, wait and re-check, or refuse."""

    accept: bool
    wait: bool = False
    why: str = ""
    min_members: int = MIN_GROUP_SIZE
    """Fewest members a final may name for this peer to take part (its plan's floor)."""
    rank: int = 0
    """The inviter's rank in this peer's planned group: 0 its leader, ``k > 0`` a stand-in
    that the follower accepts only after its own ``stand_in_time(k)``."""


ACCEPT = Verdict(accept=True)


def admit_any(invitation: Invitation) -> Verdict:
    """No plan to match (unit tests of the commit rule); the daemon uses ``PlanMatch``."""
    return ACCEPT


@dataclass(frozen=True)
class PlanMatch:
    """Admit an invitation only if it matches this peer's own plan for the round.

    The verdict carries the inviter's rank in the planned group; the follower holds an
    invitation from a stand-in (rank > 0) until its own stand-in time for that rank.

    ``view_now`` returns the roster members present in this peer's view *now* (the
    daemon: heard from within a few down times), so an invitation naming a peer it has
    not yet heard from can be re-checked a moment later.
    """

    me: str
    round: int
    group_size: int
    seed: bytes
    view_now: Callable[[], Sequence[str]]

    def __call__(self, invitation: Invitation) -> Verdict:
        seen = {*self.view_now(), self.me}
        unseen = sorted(set(invitation.members) - seen)
        if unseen:
            return Verdict(False, wait=True,
                           why=f"invites {len(unseen)} peer(s) this peer has not heard from: "
                               f"{[p[-8:] for p in unseen[:3]]}")
        planned = planned_group(self.me, seen, self.round, self.group_size, seed=self.seed)
        if planned is None:
            return Verdict(False, why="this peer's view is too small for a group")
        outside = sorted(set(invitation.members) - set(planned))
        if outside:
            return Verdict(False, why=f"invites {len(outside)} peer(s) this peer's plan puts "
                                      f"in other groups: {[p[-8:] for p in outside[:3]]}")
        floor = contributor_floor(len(planned))
        if len(invitation.members) < floor:
            return Verdict(False, why=f"invites {len(invitation.members)} of the "
                                      f"{len(planned)} peers this peer's plan groups it with; "
                                      f"at least {floor} must be asked")
        # The inviter is the lowest of the members (the follower checks that), so a
        # stand-in of rank k leaves out exactly the k members ranked before it.
        return Verdict(True, min_members=floor, rank=planned.index(invitation.leader))


class InvitationBook:
    """One peer's single commitment for one round.

    The only place that decides "have I already promised myself to a group?", shared
    by the peer's leader and follower roles so that they cannot both commit.
    """

    def __init__(self, me: str, round: int) -> None:
        self.me = me
        self.round = round
        self._committed: Invitation | None = None

    @property
    def committed(self) -> Invitation | None:
        return self._committed

    def commit(self, invitation: Invitation) -> bool:
        """Commit to ``invitation`` unless committed to another; True if now committed to it."""
        if invitation.round != self.round or self.me not in invitation.members:
            return False
        if self._committed is None:
            self._committed = invitation
            return True
        return self._committed == invitation


def never(rank: int) -> float:
    """No stand-in time: a follower built without one accepts only its planned leader."""
    return math.inf


@dataclass(frozen=True)
class StandInClock:
    """When, on one peer's clock, rank ``k`` of its planned group may stand in."""

    started: float
    config: AgreementConfig

    def __call__(self, rank: int) -> float:
        return self.started + self.config.stand_in_time(rank)


def _nobody(peer: str) -> bool:
    return False


@dataclass(frozen=True)
class RankedBeforeSilent:
    """Whether none of the members ranked before ``rank`` is still ``awaited``."""

    planned: tuple[str, ...]
    awaited: Callable[[str], bool]

    def __call__(self, rank: int) -> bool:
        return not any(self.awaited(peer) for peer in self.planned[:rank])


class FollowerStretch:
    """Whether a follower's deadline is stretched at ``now`` (``AgreementConfig.late_wait``).

    Asked only once the deadline has passed: it is stretched, until ``until``, from the
    first time a member of the invitation it committed to (before it commits: of its
    planned group) is seen ``behind``, finishing an earlier round. Sticky: that member
    turning to this round is the moment it is about to accept, not a reason to give up.
    """

    def __init__(self, book: InvitationBook, planned: tuple[str, ...],
                 behind: Callable[[str], bool], until: float) -> None:
        self.book = book
        self.planned = planned
        self.behind = behind
        self.until = until
        self.stretched = False

    def __call__(self, now: float) -> bool:
        if now >= self.until:
            return False
        if not self.stretched:
            committed = self.book.committed
            waiting_on = committed.members if committed is not None else self.planned
            self.stretched = any(self.behind(peer) for peer in waiting_on
                                 if peer != self.book.me)
        return self.stretched


class GroupFollower:
    """A peer answering invitations and waiting for its leader's final.

    ``admit`` judges each invitation (``PlanMatch`` in the daemon); invitations it says
    to wait on are kept and judged again at every ``poll`` until the deadline. An
    invitation from a stand-in of rank ``k`` is held until ``stand_in_at(k)`` (this
    peer's own clock) and judged again then, unless this peer committed meanwhile.
    """

    def __init__(
        self,
        me: str,
        round: int,
        book: InvitationBook,
        final_deadline: float,
        *,
        admit: Callable[[Invitation], Verdict] = admit_any,
        stand_in_at: Callable[[int], float] = never,
        ranked_before_silent: Callable[[int], bool] = lambda rank: True,
        stretched: Callable[[float], bool] = lambda now: False,
        wait_after_commit: float = 0.0,
    ) -> None:
        """``wait_after_commit``: once committed, wait at least this long for the final.
        The leader's window runs from *its* round start, and peers start a round when
        their last one ends: among 32 daemons a leader started 80 s after a follower,
        the follower gave up on the final at its own deadline, and the group then ran
        secure aggregation with an absent decryptor and stalled for 4.5 minutes."""
        self.me = me
        self.round = round
        self.book = book
        self.final_deadline = final_deadline
        self.wait_after_commit = wait_after_commit
        self.stretched = stretched
        self.admit = admit
        self.stand_in_at = stand_in_at
        self.ranked_before_silent = ranked_before_silent
        self.outcome: Outcome | None = None
        self.min_members = MIN_GROUP_SIZE  # the committed invitation's floor
        self.waiting: dict[str, Invitation] = {}  # group id -> invitation being re-checked
        self.held: dict[str, Invitation] = {}  # group id -> stand-in invitation, too early
        self.refused: list[tuple[str, str]] = []  # (leader, why): not accepted
        self.last_refusal = ""  # why the latest invitation was refused, for the outcome
        # (leader, group id) of invitations dissolved before this peer committed to them
        self.dissolved: set[tuple[str, str]] = set()

    def _past_deadline(self, now: float) -> bool:
        """Past ``final_deadline``, unless a member it waits for is still behind
        (``AgreementConfig.late_wait``)."""
        return now >= self.final_deadline and not self.stretched(now)

    def on_invitation(self, invitation: Invitation, sender: str, now: float) -> Acceptance | None:
        """Accept the first valid invitation naming this peer; re-accept the same one if resent."""
        if self.outcome is not None or self._past_deadline(now):
            return None
        if sender != invitation.leader or invitation.leader == self.me:
            return None
        if invitation.leader != leader_of(invitation.members):
            return None
        if self.me not in invitation.members or invitation.round != self.round:
            return None
        return self._judge(invitation, now)

    def _judge(self, invitation: Invitation, now: float) -> Acceptance | None:
        if (invitation.leader, invitation.group_id) in self.dissolved:
            self.held.pop(invitation.group_id, None)
            self.waiting.pop(invitation.group_id, None)
            return None
        verdict = self.admit(invitation)
        self.held.pop(invitation.group_id, None)
        if verdict.wait:
            self.waiting[invitation.group_id] = invitation
            return None
        self.waiting.pop(invitation.group_id, None)
        if not verdict.accept:
            self.refused.append((invitation.leader, verdict.why))
            self.last_refusal = f"refused {invitation.leader[-8:]}'s invitation: {verdict.why}"
            return None
        if verdict.rank > 0 and (now < self.stand_in_at(verdict.rank)
                                 or not self.ranked_before_silent(verdict.rank)):
            # A stand-in before this peer has waited its own stand-in time for the
            # members ranked before it, or while one of them still shows signs of life:
            # held, so their invitation still wins if it comes.
            if self.book.committed is None:
                self.held[invitation.group_id] = invitation
            return None
        first = self.book.committed is None
        if not self.book.commit(invitation):
            return None
        if first:
            self.final_deadline = max(self.final_deadline, now + self.wait_after_commit)
        self.min_members = max(MIN_GROUP_SIZE, verdict.min_members)
        return Acceptance(round=self.round, group_id=invitation.group_id, peer=self.me,
                          min_members=self.min_members)

    def on_final(self, final: GroupFinal, sender: str, now: float) -> Outcome | None:
        committed = self.book.committed
        if self.outcome is not None or committed is None or self._past_deadline(now):
            return None
        if sender != final.leader or not _answers(committed, final.round, final.group_id, sender):
            return None
        if self.me not in final.members or not set(final.members) <= set(committed.members):
            self.outcome = Alone("the group was finalised without this peer (late acceptance)")
        elif len(final.members) < self.min_members:
            self.outcome = Alone(
                f"the leader's final names {len(final.members)} peers, fewer than the "
                f"{self.min_members} this peer's plan needs in a sum with it")
        else:
            self.outcome = Formed(self.round, final.members, final.leader, final.group_id,
                                  self.min_members)
        return self.outcome

    def on_dissolved(self, dissolved: GroupDissolved, sender: str, now: float) -> Outcome | None:
        committed = self.book.committed
        if self.outcome is not None or sender != dissolved.leader:
            return None
        if committed is None:
            # A leader that gave up early (rule 7) can dissolve before this peer's stand-in
            # time lets it accept the held invitation: never commit to it afterwards.
            self.dissolved.add((sender, dissolved.group_id))
            for pending in (self.held, self.waiting):
                invitation = pending.get(dissolved.group_id)
                if invitation is not None and invitation.leader == sender:
                    del pending[dissolved.group_id]
            return None
        if not _answers(committed, dissolved.round, dissolved.group_id, sender):
            return None
        self.outcome = Alone("fewer than 3 peers accepted the invitation; the group dissolved")
        return self.outcome

    def recheck(self, now: float) -> list[Outgoing]:
        """Judge the waiting invitations again (the view may have grown since) and the
        held stand-in invitations (their time may have come), lowest inviter first: the
        lowest rank wins when several have become acceptable."""
        if self.outcome is not None or self._past_deadline(now) or self.book.committed:
            self.waiting.clear()
            self.held.clear()
            return []
        accepted = []
        pending = sorted([*self.waiting.values(), *self.held.values()],
                         key=lambda invitation: (invitation.leader, invitation.group_id))
        for invitation in pending:
            acceptance = self._judge(invitation, now)
            if acceptance is not None:
                accepted.append(Outgoing((invitation.leader,), acceptance))
        return accepted

    def poll(self, now: float) -> Outcome | None:
        if self.outcome is None and self._past_deadline(now):
            if self.book.committed is None and self.waiting:
                self.outcome = Alone("the invitation named peers this peer never heard from "
                                     "before the deadline")
            elif self.book.committed is None and self.held:
                self.outcome = Alone("only a stand-in invited this peer, and its stand-in "
                                     "time did not come before the deadline")
            elif self.book.committed is None:
                self.outcome = Alone(
                    self.last_refusal or "no invitation arrived before the deadline")
            else:
                self.outcome = Alone("the leader's final did not arrive before the deadline")
        return self.outcome


def _answers(committed: Invitation, round: int, invitation_id: str, leader: str) -> bool:
    return (
        committed.round == round
        and committed.group_id == invitation_id
        and committed.leader == leader
    )


class GroupLeader:
    """The lowest-id peer of a planned group: invites, collects acceptances, finalises."""

    def __init__(
        self,
        me: str,
        round: int,
        planned: Sequence[str],
        book: InvitationBook,
        invite_deadline: float,
        *,
        min_members: int = MIN_GROUP_SIZE,
        behind: Callable[[str], bool] = _nobody,
        late_until: float | None = None,
        up_now: Callable[[], Sequence[str]] | None = None,
        down_wait_until: float | None = None,
        past: Callable[[str], bool] = _nobody,
    ) -> None:
        """``behind(peer)``: ``peer`` is alive and still finishing an earlier round; the
        window stays open for such an invitee until ``late_until`` (default: it does not).

        ``past(peer)``: ``peer`` has left this round's grouping (it is in another group or
        a later round), so it will not accept: the leader stops waiting for it, finalising
        once the acceptors meet the floor, or dissolving at once when the invitees still
        able to accept could not reach it.

        ``up_now``: whom the leader sees up now. From ``down_wait_until`` on, once the
        acceptors meet the floor and every invitee still missing is down in that view,
        the leader finalises without waiting for the rest of the window: a member that
        crashed a minute ago is still planned (plans count present members), and its
        group need not wait the whole window for it. Default: the window decides."""
        members = tuple(sorted(set(planned)))
        if leader_of(members) != me:
            raise ValueError(f"{me} is not the lowest peer id of {members}")
        self.me = me
        self.round = round
        self.invitation = Invitation(round, group_id(round, members), me, members)
        self.book = book
        self.invite_deadline = invite_deadline
        self.behind = behind
        self.late_until = invite_deadline if late_until is None else late_until
        self.late: set[str] = set()  # invitees seen behind once the window had closed
        self.up_now = up_now
        self.down_wait_until = invite_deadline if down_wait_until is None else down_wait_until
        self.past = past
        self.min_members = max(MIN_GROUP_SIZE, min_members)
        self.accepted: set[str] = set()
        self.floors: dict[str, int] = {}  # acceptor -> the smallest final it takes part in
        self.outcome: Outcome | None = None
        self.leading = book.commit(self.invitation)
        if not self.leading:
            self.outcome = Alone("already committed to another group before leading")

    @property
    def invitees(self) -> tuple[str, ...]:
        return tuple(peer for peer in self.invitation.members if peer != self.me)

    def start(self) -> list[Outgoing]:
        if not self.leading:
            return []
        return [Outgoing(self.invitees, self.invitation)]

    def on_acceptance(self, acceptance: Acceptance, sender: str, now: float) -> list[Outgoing]:
        if not self.leading or self.outcome is not None:
            return []
        if self._window_closed(now):
            return self._finalise()
        if sender != acceptance.peer or sender not in self.invitees:
            return []
        if acceptance.round != self.round or acceptance.group_id != self.invitation.group_id:
            return []
        if acceptance.min_members > len(self.invitation.members):
            return []  # it would refuse any final of this invitation: not an acceptance
        self.accepted.add(sender)
        self.floors[sender] = acceptance.min_members
        if self.accepted == set(self.invitees):
            return self._finalise()
        return []

    def poll(self, now: float) -> list[Outgoing]:
        if self.leading and self.outcome is None and (
            self._window_closed(now) or self._only_down_missing(now) or self._settled()
        ):
            return self._finalise()
        return []

    def _settled(self) -> bool:
        """Every invitee that has not accepted is ``past`` this round's grouping, or too
        few of them are left to reach the floor: waiting on cannot change the group."""
        missing = set(self.invitees) - self.accepted
        able = [peer for peer in missing if not self.past(peer)]
        if not able:
            return True
        return len(self.accepted) + 1 + len(able) < self._need()

    def _need(self) -> int:
        return max([self.min_members, *self.floors.values()])

    def _only_down_missing(self, now: float) -> bool:
        """Past ``down_wait_until``, the acceptors meet every floor and each invitee that
        has not accepted is down in ``up_now``: waiting on would only delay the group."""
        if self.up_now is None or now < self.down_wait_until:
            return False
        if len(self.accepted) + 1 < self._need():
            return False
        missing = set(self.invitees) - self.accepted
        return not missing & set(self.up_now())

    def _window_closed(self, now: float) -> bool:
        """Past the invitation window, unless ``late_until`` has not come and an invitee
        seen behind (alive, finishing an earlier round) since the window closed has not
        accepted yet. Sticky per invitee: its turning to this round is the moment it is
        about to accept."""
        if now < self.invite_deadline:
            return False
        if now >= self.late_until:
            return True
        self.late.update(peer for peer in self.invitees
                         if peer not in self.accepted and self.behind(peer))
        return not (self.late - self.accepted)

    def _finalise(self) -> list[Outgoing]:
        members = tuple(sorted(self.accepted | {self.me}))
        invitation_id = self.invitation.group_id
        need = self._need()
        if len(members) >= need:
            self.outcome = Formed(self.round, members, self.me, invitation_id, self.min_members)
            final = GroupFinal(self.round, invitation_id, self.me, members)
            return [Outgoing(self.invitees, final)]
        self.outcome = Alone(f"{len(members)} of {len(self.invitation.members)} planned peers "
                             f"took part, fewer than {need}; the group dissolved")
        return [Outgoing(self.invitees, GroupDissolved(self.round, invitation_id, self.me))]


class GroupAgreement:
    """One peer's whole part in one round's group agreement.

    Plans groups from this peer's own view, leads if it is the lowest id of its
    planned group, follows otherwise, and reports an ``Outcome`` once decided.
    """

    def __init__(
        self,
        me: str,
        round: int,
        view: Sequence[str],
        now: float,
        *,
        group_size: int = DEFAULT_GROUP_SIZE,
        seed: bytes = b"",
        config: AgreementConfig | None = None,
        view_now: Callable[[], Sequence[str]] | None = None,
        up_now: Callable[[], Sequence[str]] | None = None,
        awaited: Callable[[str], bool] | None = None,
        behind: Callable[[str], bool] | None = None,
        past: Callable[[str], bool] | None = None,
        moved_on: Callable[[str], bool] | None = None,
    ) -> None:
        """``view`` plans this peer's own group; ``view_now`` (default: ``view``) is what
        it sees present when it judges an invitation (``PlanMatch``).

        ``up_now`` (default: ``view_now``) is whom this peer sees up now, a subset of the
        present members. A leader invites its whole planned group (a member whose
        heartbeats are late is alive more often than not), and from the rank-1 stand-in
        time on finalises without waiting for invitees it sees down once the acceptors
        meet the floor (``GroupLeader``); a stand-in invites only the members it sees
        up. The daemon plans over members heard within a few down times, so that a
        heartbeat that arrives late does not reshuffle its plan, but a member that
        crashed a minute ago then holds its group half a window, not a whole one.

        ``behind(peer)``: ``peer`` is alive and still finishing an earlier round (the
        daemon: a fresh heartbeat naming an earlier round); windows and deadlines stretch
        for such a member by ``AgreementConfig.late_wait``. Default: nobody is.

        ``awaited(peer)`` says whether ``peer`` still shows signs of working towards this
        round (the daemon: a fresh heartbeat naming this round or an earlier one): no
        stand-in replaces a member ranked before it while that is so, since a slow but
        live leader would otherwise lose its group and, in a federation of one group,
        keep losing it (both halves wait out their windows, so the skew persists).
        Default: nobody is, the stand-in times alone decide (unit tests, simulation).

        ``past(peer)``: ``peer`` has left this round's grouping: the daemon's latest
        heartbeat from it names a later round, or this round in a phase after grouping.
        Once so many of this peer's planned group are past that the rest could not
        reach its floor, no invitation it may accept can come: a follower gives up at
        once instead of waiting out its deadline (a member restarted into a round whose
        groups formed while it was down waited 100 s, then skipped the next round too),
        and a leader stops waiting for such invitees. A member that lies about being
        past only leaves its own groups, which it could do by staying silent. Default:
        nobody is.

        ``moved_on(peer)``: ``peer`` is in a later round (the daemon: its latest heartbeat
        says so). A follower that accepted a leader gives up on the final once that
        leader has moved on: it finished this round without sending it (it crashed and
        restarted into a later round, or its group ran without this peer). Only a later
        round counts, not a later phase: a leader that is aggregating this round has
        sent its final, which may still be on its way. Default: nobody has."""
        self.config = config or AgreementConfig()
        self.me = me
        self.round = round
        self.book = InvitationBook(me, round)
        self.planned = planned_group(me, (*view, me), round, group_size, seed=seed)
        self.invite_deadline = now + self.config.invite_window
        fixed_view = tuple(view)
        self.view_now = view_now or (lambda: fixed_view)
        self.up_now = up_now or self.view_now
        # given only by the daemon: then a leader stops waiting for invitees seen down
        self._leader_up_now = up_now
        self.awaited = awaited or _nobody
        self.behind = behind or _nobody
        self.past = past or _nobody
        self.moved_on = moved_on or _nobody
        stretch = self.config.late_wait * self.config.invite_window
        self.late_until = self.invite_deadline + stretch
        final_deadline = self.invite_deadline + self.config.final_grace
        self.follower = GroupFollower(
            me, round, self.book, final_deadline,
            admit=PlanMatch(me, round, group_size, seed, self.view_now),
            # not bound methods: a cycle would keep every agreement alive until the
            # garbage collector runs (the 4,096-peer simulation doubled its peak RSS)
            stand_in_at=StandInClock(now, self.config),
            ranked_before_silent=RankedBeforeSilent(self.planned or (), self.awaited),
            stretched=FollowerStretch(
                self.book, self.planned or (), self.behind,
                final_deadline + stretch),
            # the leader finalises at most a window, stretched, after it sent the
            # invitation, which was before this peer got it
            wait_after_commit=self.config.invite_window + stretch + self.config.final_grace,
        )
        self.leader: GroupLeader | None = None
        self.stood_in = False
        """True once this peer leads a stand-in invitation (its planned leader was silent)."""
        self._initial: list[Outgoing] = []
        if self.planned is None:
            self.follower.outcome = Alone("fewer than 3 peers in this peer's view")
        elif leader_of(self.planned) == me:
            self.leader = GroupLeader(
                me, round, self.planned, self.book, self.invite_deadline,
                min_members=contributor_floor(len(self.planned)),
                behind=self.behind, late_until=self.late_until, up_now=self._leader_up_now,
                down_wait_until=now + self.config.stand_in_time(1), past=self.past)
            self._initial = self.leader.start()

    def _up_of(self, peers: Sequence[str]) -> list[str]:
        """Those of ``peers`` this peer sees up now (itself always), in their order."""
        up = {*self.up_now(), self.me}
        return [peer for peer in peers if peer in up]

    def stand_in_at(self, rank: int) -> float:
        """When, on this peer's clock, rank ``rank`` of a planned group may stand in."""
        return self.follower.stand_in_at(rank)

    @property
    def rank(self) -> int | None:
        """This peer's rank in its planned group (0: it leads), None without a group."""
        return None if self.planned is None else self.planned.index(self.me)

    @property
    def outcome(self) -> Outcome | None:
        if self.leader is not None:
            return self.leader.outcome
        return self.follower.outcome

    def start(self) -> list[Outgoing]:
        """The invitation to send if this peer leads (once); empty otherwise."""
        initial, self._initial = self._initial, []
        return initial

    def receive(self, message: GroupMessage, sender: str, now: float) -> list[Outgoing]:
        """Handle one authenticated message; returns what to send in reply."""
        if message.round != self.round:
            return []
        if isinstance(message, Invitation):
            acceptance = self.follower.on_invitation(message, sender, now)
            if acceptance is None:
                return []
            return [Outgoing((message.leader,), acceptance)]
        if isinstance(message, Acceptance):
            return self.leader.on_acceptance(message, sender, now) if self.leader else []
        if self.leader is not None:
            return []  # a leader follows nobody
        if isinstance(message, GroupFinal):
            self.follower.on_final(message, sender, now)
        else:
            self.follower.on_dissolved(message, sender, now)
        return []

    def poll(self, now: float) -> list[Outgoing]:
        """Advance timers: the leader finalises, a follower re-checks waiting and held
        invitations, stands in for a silent leader, or gives up."""
        if self.leader is not None:
            return self.leader.poll(now)
        outgoing = self.follower.recheck(now)
        outgoing += self._stand_in(now)
        if self.leader is None:
            self._give_up_if_formed_without_me()
            self.follower.poll(now)
        return outgoing

    def _give_up_if_formed_without_me(self) -> None:
        """Alone at once when, uncommitted, too few of the planned group are still in this
        round's grouping to reach its floor (``past``): no acceptable invitation can come;
        or when, committed, the leader it accepted has ``moved_on`` to a later round."""
        if self.planned is None or self.follower.outcome is not None:
            return
        committed = self.book.committed
        if committed is not None:
            if self.moved_on(committed.leader):
                self.follower.outcome = Alone(
                    f"the leader it accepted, {committed.leader[-8:]}, moved on to a later "
                    "round without sending its final")
            return
        others = [peer for peer in self.planned if peer != self.me]
        gone = [peer for peer in others if self.past(peer)]
        floor = contributor_floor(len(self.planned))
        if gone and len(self.planned) - len(gone) < floor:
            self.follower.outcome = Alone(
                f"{len(gone)} of the {len(others)} peers planned with this peer are past "
                f"this round's grouping; fewer than {floor} could still form its group")

    def _stand_in(self, now: float) -> list[Outgoing]:
        """Lead ``planned[rank:]`` (those of it this peer still sees up) if every lower
        rank stayed silent until this peer's stand-in time (no invitation, and
        ``awaited`` says none of them is still working on the round), the window is
        still open and they meet the planned group's floor."""
        rank = self.rank
        if self.planned is None or not rank or self.book.committed is not None:
            return []
        if self.follower.outcome is not None or not self.stand_in_at(rank) <= now:
            return []
        if not self.follower.ranked_before_silent(rank):
            return []
        floor = contributor_floor(len(self.planned))
        if now >= self.invite_deadline or len(self.planned) - rank < floor:
            return []
        # Half a window on, a planned member that crashed may be gone from the followers'
        # views: naming it would make every follower wait for it (PlanMatch), and waiting
        # for its acceptance would hold the group to the window's end, so the stand-in
        # leaves out whom it no longer sees up, if the floor still holds.
        members = self._up_of(self.planned[rank:])
        if len(members) < floor:
            return []
        self.leader = GroupLeader(self.me, self.round, members, self.book,
                                  self.invite_deadline, min_members=floor,
                                  behind=self.behind, late_until=self.late_until,
                                  up_now=self._leader_up_now,
                                  down_wait_until=now, past=self.past)
        self.stood_in = True
        return self.leader.start()
