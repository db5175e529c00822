"""An ABORT from the aggregator or decryptor ends whatever a member waits for (#27).

Among 32 daemons an aggregator that never received the decryptor's context ended its own
session; its members, who had the context, waited through keys, shares and three steps
for a survivor set, 6 to 9 minutes. A role's ABORT is now accepted whatever context it is
bound to (the aggregator had none), and it ends every wait, not only the two waits that
listed it. An ordinary member still cannot abort anyone.
"""

from __future__ import annotations

import hashlib
import time

import pytest
from fedswarm.secagg.errors import RoundAbortedError
from fedswarm.secagg.inbox import Inbox, Roles
from fedswarm.secagg.messages import RoundBinding, Step, encode_message
from fedswarm.secagg.payloads import ABORT_OTHER, AbortPayload
from fedswarm.secagg.roles import assign_roles

from .conftest import Group, NowhereTransport

CONTEXT = hashlib.sha256(b"the decryptor's context").digest()


def _setup() -> tuple[Group, Inbox, RoundBinding, str, str, str]:
    group = Group(4)
    a, d = assign_roles(group.members, group.spec.round, group.spec.group_id)
    me = next(m for m in group.members if m not in (a, d))
    other = next(m for m in group.members if m not in (a, d, me))
    binding = RoundBinding(group.spec.federation_id, group.spec.group_id, group.spec.round)
    roles = Roles(frozenset(group.members), a, d)
    inbox = Inbox(NowhereTransport(), binding, me, group.verify, roles)
    inbox.set_context(CONTEXT)
    return group, inbox, binding, me, a, other


def _abort(group: Group, binding: RoundBinding, sender: str, to: str) -> bytes:
    payload = AbortPayload(ABORT_OTHER, "the aggregator gave up: no context").encode()
    return encode_message(group.signers[sender], binding, Step.ABORT, to, bytes(32), payload)


async def test_an_aggregators_abort_without_the_context_ends_a_wait_for_keys() -> None:
    group, inbox, binding, me, aggregator, other = _setup()
    inbox.accept(aggregator, _abort(group, binding, aggregator, me))
    assert inbox.role_aborted
    started = time.monotonic()
    with pytest.raises(RoundAbortedError, match="the aggregator gave up"):
        await inbox.next((Step.KEYS,), (other,), time.monotonic() + 30.0)
    assert time.monotonic() - started < 1.0  # not the 30 s deadline


async def test_a_wait_that_lists_abort_gets_the_message_itself() -> None:
    group, inbox, binding, me, aggregator, _ = _setup()
    inbox.accept(aggregator, _abort(group, binding, aggregator, me))
    message = await inbox.next((Step.SURVIVORS, Step.ABORT), (aggregator,), time.monotonic() + 1)
    assert message is not None and message.step is Step.ABORT


async def test_an_ordinary_member_cannot_abort_anyone() -> None:
    group, inbox, binding, me, _, other = _setup()
    inbox.accept(other, _abort(group, binding, other, me))
    assert not inbox.role_aborted
    assert inbox.rejected  # refused, and the wait goes on to its deadline
    assert await inbox.next((Step.KEYS,), (other,), time.monotonic() + 0.05) is None
