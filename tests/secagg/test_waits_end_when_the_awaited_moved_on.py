"""A wait on members who have all moved on to a later round ends soon after (#27).

Among 32 daemons a member waited 8 minutes in round 1 for an aggregator that had given
up and gone on to round 2: its ABORT never reached that member. The daemon knows from a
member's signed heartbeat when it has left a round; such a member sends nothing more
for that round, so a wait on it alone ends after a short grace (for what it sent just
before it left) instead of at the step deadline. A member whose heartbeat still names
this round is waited for as before, and messages that do arrive are delivered.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

import numpy as np
from fedswarm.secagg import session as session_module
from fedswarm.secagg.errors import RoleUnavailableError
from fedswarm.secagg.inbox import Inbox, Roles
from fedswarm.secagg.messages import RoundBinding, Step, encode_message
from fedswarm.secagg.roles import assign_roles
from fedswarm.secagg.session import (
    ROLE_WAIT_FACTOR,
    AggregationResult,
    run_secure_aggregation,
)

from .conftest import FailsOneStep, Group, MemberCrashed, random_updates
from .test_round_average import N_PARAMS, SMALL_PARAMS, run_group

CONTEXT = hashlib.sha256(b"the decryptor's context").digest()


class QuietTransport:
    """Nothing arrives unless a test puts it in; a receive waits out its timeout."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    async def send(self, recipient: str, data: bytes) -> None:
        raise AssertionError("the inbox never sends")

    async def receive(self, timeout: float) -> tuple[str, bytes]:
        return await asyncio.wait_for(self.queue.get(), timeout)


def _inbox(grace_s: float, moved_on: set[str]) -> tuple[Group, Inbox, QuietTransport, str, str]:
    """``moved_on``: whom the member's view shows in a later round (filled in by a test)."""
    group = Group(4)
    a, d = assign_roles(group.members, group.spec.round, group.spec.group_id)
    me = next(m for m in group.members if m not in (a, d))
    binding = RoundBinding(group.spec.federation_id, group.spec.group_id, group.spec.round)
    transport = QuietTransport()
    inbox = Inbox(transport, binding, me, group.verify, Roles(frozenset(group.members), a, d),
                  moved_on=lambda peer: peer in moved_on, moved_on_grace_s=grace_s)
    inbox.set_context(CONTEXT)
    return group, inbox, transport, me, a


async def test_a_wait_on_an_aggregator_that_moved_on_ends_after_the_grace() -> None:
    gone: set[str] = set()
    _, inbox, _, _, aggregator = _inbox(0.3, gone)
    gone.add(aggregator)  # its heartbeat names a later round
    started = time.monotonic()
    got = await inbox.next((Step.SURVIVORS,), (aggregator,), time.monotonic() + 30.0)
    assert got is None
    assert 0.3 <= time.monotonic() - started < 5.0  # not the 30 s deadline
    assert inbox.left == {aggregator}


async def test_what_the_member_sent_before_it_left_is_still_delivered() -> None:
    gone: set[str] = set()
    group, inbox, transport, me, aggregator = _inbox(2.0, gone)
    gone.add(aggregator)
    binding = RoundBinding(group.spec.federation_id, group.spec.group_id, group.spec.round)
    survivors = encode_message(group.signers[aggregator], binding, Step.SURVIVORS, me,
                               CONTEXT, b"late but sent")

    async def arrives_late() -> None:
        await asyncio.sleep(0.4)
        await transport.queue.put((aggregator, survivors))

    late = asyncio.create_task(arrives_late())
    got = await inbox.next((Step.SURVIVORS,), (aggregator,), time.monotonic() + 30.0)
    await late
    assert got is not None and bytes(got.payload) == b"late but sent"
    assert inbox.left == set()


async def test_a_wait_on_several_ends_early_only_when_all_of_them_moved_on() -> None:
    gone: set[str] = set()
    group, inbox, _, me, aggregator = _inbox(0.2, gone)
    others = tuple(m for m in group.members if m not in (me, aggregator))
    gone.add(others[0])
    started = time.monotonic()
    assert await inbox.gather(Step.KEYS, others, time.monotonic() + 1.5) == {}
    assert time.monotonic() - started >= 1.5  # one of them is still in this round
    assert inbox.left == set()
    gone.update(others)
    started = time.monotonic()
    assert await inbox.gather(Step.KEYS, others, time.monotonic() + 30.0) == {}
    assert time.monotonic() - started < 5.0
    assert inbox.left == set(others)


async def test_members_stop_waiting_for_an_aggregator_that_left_the_round(pool) -> None:
    """The aggregator is gone after the uploads (its heartbeat names a later round):
    the others end their wait for the survivor set a grace after they see it, not after
    three step waits, and say why."""
    k = 4
    group = Group(k)
    aggregator, _ = assign_roles(group.members, group.spec.round, group.spec.group_id)
    step_wait = 3.0
    updates = random_updates(k, N_PARAMS, seed=9)
    started = time.monotonic()
    results = await run_group(group, updates, [1.0] * k, pool, timeout=step_wait,
                              drop_at={aggregator: int(Step.SURVIVORS)},
                              moved_on=lambda peer: peer in group.network.dead)
    elapsed = time.monotonic() - started
    for m, r in zip(group.members, results, strict=True):
        if m == aggregator:
            assert isinstance(r, MemberCrashed), r
        else:
            assert isinstance(r, RoleUnavailableError), r
            assert "no survivor set (it left the round: its heartbeat names a later round" in str(r)
    assert elapsed < ROLE_WAIT_FACTOR * step_wait


async def test_a_view_that_says_everyone_moved_on_does_not_stop_a_prompt_round(pool) -> None:
    """A stale or lying view costs nothing while the messages keep coming."""
    k = 4
    group = Group(k)
    updates = random_updates(k, N_PARAMS, seed=10)
    results = await run_group(group, updates, [1.0] * k, pool, moved_on=lambda peer: True)
    assert all(isinstance(r, AggregationResult) for r in results), results
    assert all(np.array_equal(r.average, results[0].average) for r in results)  # type: ignore[union-attr]


async def test_a_send_to_a_peer_that_moved_on_is_given_up(pool, monkeypatch) -> None:
    """Among 32 daemons an upload to an aggregator whose connection hung held a member
    90 s past its group's ABORT. The send is now given up a grace after the aggregator
    moves on (here it finishes without that upload), not at the end of the stuck
    member's own step wait (a longer one than the others', as its config may say)."""
    monkeypatch.setattr(session_module, "MOVED_ON_GRACE_S", 0.5)
    k = 5
    group = Group(k)
    aggregator, decryptor = assign_roles(group.members, group.spec.round, group.spec.group_id)
    stuck = next(m for m in group.members if m not in (aggregator, decryptor))
    finished: dict[str, float] = {}
    step_wait = 4.0
    updates = random_updates(k, N_PARAMS, seed=11)

    async def member(i: int, m: str):
        transport = group.network.transport(m)
        try:
            return await run_secure_aggregation(
                group.spec, group.signers[m], group.verify, updates[i], 1.0,
                (FailsOneStep(transport, aggregator, Step.UPLOAD, hang=True) if m == stuck
                 else transport),
                SMALL_PARAMS, step_timeout_s=4 * step_wait if m == stuck else step_wait,
                executor=pool, moved_on=lambda peer: peer in finished)
        finally:
            finished[m] = time.monotonic()  # its heartbeat names the next round now

    results = await asyncio.gather(*(member(i, m) for i, m in enumerate(group.members)),
                                   return_exceptions=True)
    others = [r for m, r in zip(group.members, results, strict=True) if m != stuck]
    assert all(isinstance(r, AggregationResult) and stuck in r.dropped for r in others), others
    assert finished[stuck] - finished[aggregator] < step_wait  # not 4 x step_wait
