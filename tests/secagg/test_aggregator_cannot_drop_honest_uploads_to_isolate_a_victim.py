"""A hostile aggregator cannot drop honest uploads until a victim is alone with colluders.

issue #19: in a group of five (t = 3), A and D collude. A discards the uploads of two
honest members as if they never arrived and lists the survivors {A, D, victim}: three
survivors reach both the Shamir threshold and ``MIN_CONTRIBUTORS``, every member
confirms the same set (there is no split view to catch), and the group's "average" is
(x_A + x_D + x_victim) / 3, from which A and D, knowing their own inputs, read the
victim's update exactly.

The defence: each member passes its ``contributor_floor`` (more than half of its planned
group, plus one: 4 of 5) as ``GroupSpec.min_survivors``, and sends no unmask share for a
smaller survivor set. The first test shows the attack works without the floor, so the
second one can fail.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import replace

import numpy as np
from fedswarm.federation.round import contributor_floor
from fedswarm.secagg.errors import SecAggError, TooFewContributorsError
from fedswarm.secagg.messages import Step, peek_binding
from fedswarm.secagg.roles import assign_roles
from fedswarm.secagg.session import AggregationResult, GroupSpec, run_secure_aggregation

from .conftest import SMALL_PARAMS, Group, MemoryTransport, random_updates

N_PARAMS = 400
TIMEOUT = 1.5


class DroppingAggregator(MemoryTransport):
    """A's transport: uploads from ``ignored`` are read and thrown away, unanswered."""

    def __init__(self, group: Group, me: str, ignored: set[str]) -> None:
        super().__init__(group.network, me, None)
        self.ignored = ignored

    async def receive(self, timeout: float) -> tuple[str, bytes]:
        while True:
            sender, data = await super().receive(timeout)
            if sender in self.ignored and peek_binding(data)[1] is Step.UPLOAD:
                continue
            return sender, data


async def _attack(
    pool: concurrent.futures.ProcessPoolExecutor, honest_floor: int
) -> tuple[Group, dict[str, np.ndarray], dict[str, object], str, tuple[str, str]]:
    group = Group(5, round_=13, group_id="isolate-victim")
    a, d = assign_roles(group.members, group.spec.round, group.spec.group_id)
    honest = [m for m in group.members if m not in (a, d)]
    victim, ignored = honest[0], set(honest[1:])
    updates = dict(zip(group.members, random_updates(5, N_PARAMS, seed=23), strict=True))
    honest_spec = replace(group.spec, min_survivors=honest_floor)
    colluder_spec = replace(group.spec, min_survivors=0)  # modified code checks nothing

    def run(member: str) -> asyncio.Future[AggregationResult]:
        spec: GroupSpec = colluder_spec if member in (a, d) else honest_spec
        transport = (DroppingAggregator(group, member, ignored) if member == a
                     else group.network.transport(member))
        return run_secure_aggregation(spec, group.signers[member], group.verify,
                                      updates[member], 1.0, transport, SMALL_PARAMS,
                                      step_timeout_s=TIMEOUT, executor=pool)

    outcomes = await asyncio.gather(*(run(m) for m in group.members), return_exceptions=True)
    return group, updates, dict(zip(group.members, outcomes, strict=True)), victim, (a, d)


def _unmask_senders(group: Group) -> set[str]:
    return {sender for sender, _, data in group.network.log
            if peek_binding(data)[1] is Step.UNMASK}


async def test_without_the_floor_dropping_two_uploads_reveals_the_victims_update(pool) -> None:
    _, updates, outcomes, victim, (a, d) = await _attack(pool, honest_floor=0)
    result = outcomes[victim]
    assert isinstance(result, AggregationResult), result
    assert sorted(result.survivors) == sorted((a, d, victim))
    recovered = result.average * 3 - updates[a] - updates[d]
    # the attack is real: the victim's update, up to three quantisation errors
    assert np.max(np.abs(recovered - updates[victim])) < 3 * result.error_bound + 1e-6
    assert np.corrcoef(recovered, updates[victim])[0, 1] > 0.9999


async def test_with_the_floor_the_victim_sends_no_unmask_share(pool) -> None:
    floor = contributor_floor(5)
    assert floor == 4
    group, _, outcomes, victim, (a, d) = await _attack(pool, honest_floor=floor)
    for member, outcome in outcomes.items():
        if member in (a, d):
            continue
        assert isinstance(outcome, SecAggError), (member, outcome)
    assert isinstance(outcomes[victim], TooFewContributorsError), outcomes[victim]
    assert _unmask_senders(group) <= {a, d}  # no honest share reached D
    assert not isinstance(outcomes[d], AggregationResult)  # D could not unmask alone


def test_a_group_smaller_than_the_required_floor_is_refused_before_anything_is_sent(
) -> None:
    group = Group(3)
    spec = replace(group.spec, min_survivors=4)
    transport = group.network.transport(group.members[0])
    update = np.zeros(10, dtype=np.float32)
    try:
        asyncio.run(run_secure_aggregation(spec, group.signers[group.members[0]],
                                           group.verify, update, 1.0, transport, SMALL_PARAMS,
                                           step_timeout_s=TIMEOUT))
    except SecAggError as exc:
        assert "fewer than the 4 survivors" in str(exc)
    else:  # pragma: no cover - the assertion below says what went wrong
        raise AssertionError("a group of 3 was run with min_survivors = 4")
    assert group.network.log == []
