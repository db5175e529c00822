"""A and D together cannot split the honest members' views (issue #19, attack 3).

A hostile aggregator showed half the honest members one survivor set and the other half
another, each containing A and D, and D confirmed to each half what it saw. Members
waited only for CONFIRMs of their own view and counted A and D towards the threshold,
so one half revealed each victim's self-mask seed shares and the other half its mask-key
shares: with A's and D's own shares both secrets reached t, and every honest update
could be unmasked. Now every member reads the CONFIRM of every mask-set member that
arrives, aborts on any mismatch, and needs more than half of the mask set *other than A
and D* to confirm its own view: two disjoint views cannot both reach that.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter

import pytest
from fedswarm.secagg.errors import SecAggError
from fedswarm.secagg.messages import Step, decode_message, encode_message, peek_binding
from fedswarm.secagg.payloads import (
    MASK_KEY_SHARE,
    SEED_SHARE,
    DigestPayload,
    SurvivorsPayload,
    UnmaskPayload,
)
from fedswarm.secagg.roles import assign_roles
from fedswarm.secagg.session import run_secure_aggregation
from fedswarm.secagg.shamir import threshold_for

from .conftest import SMALL_PARAMS, Group, MemoryTransport, random_updates
from .test_round_average import N_PARAMS

TIMEOUT = 1.5


class SplitViewTransport(MemoryTransport):
    """A's or D's transport: each honest half gets its own survivor set and CONFIRMs of it."""

    def __init__(self, group: Group, me: str, views: dict[str, SurvivorsPayload]) -> None:
        super().__init__(group.network, me, None)
        self.group = group
        self.views = views  # recipient -> the survivor set it is shown

    async def send(self, recipient: str, data: bytes) -> None:
        binding, step, _ = peek_binding(data)
        view = self.views.get(recipient)
        if view is not None and step in (Step.SURVIVORS, Step.CONFIRM):
            message = decode_message(data, binding, recipient, self.group.verify)
            payload = view.encode()
            if step is Step.CONFIRM:
                payload = DigestPayload(hashlib.sha256(payload).digest()).encode()
            data = encode_message(self.group.signers[self.me], binding, step, recipient,
                                  message.context_hash, payload)
        await super().send(recipient, data)


def revealed_to_decryptor(group: Group, decryptor: str) -> Counter[tuple[str, int]]:
    """(owner, share kind) -> how many honest members revealed that share to D."""
    counts: Counter[tuple[str, int]] = Counter()
    for _sender, recipient, data in group.network.log:
        binding, step, _ = peek_binding(data)
        if step is not Step.UNMASK or recipient != decryptor:
            continue
        message = decode_message(data, binding, recipient, group.verify)
        for share in UnmaskPayload.decode(message.payload).shares:
            counts[(share.owner, share.kind)] += 1
    return counts


@pytest.mark.parametrize("k", [6, 8])
async def test_a_split_view_by_a_and_d_reveals_no_honest_members_both_secrets(k, pool) -> None:
    group = Group(k)
    a, d = assign_roles(group.members, group.spec.round, group.spec.group_id)
    honest = [m for m in group.members if m not in (a, d)]
    first, second = honest[: len(honest) // 2], honest[len(honest) // 2:]
    mask_set = group.members
    view_1 = SurvivorsPayload(tuple(sorted([a, d, *first])), mask_set)
    view_2 = SurvivorsPayload(tuple(sorted([a, d, *second])), mask_set)
    t = threshold_for(k)
    assert len(view_1.survivors) >= t and len(view_2.survivors) >= t  # both views pass t
    views = {m: view_1 for m in first} | {m: view_2 for m in second}

    updates = random_updates(k, N_PARAMS, seed=11)
    tasks = []
    for i, member in enumerate(group.members):
        transport = (SplitViewTransport(group, member, views) if member in (a, d)
                     else group.network.transport(member))
        tasks.append(run_secure_aggregation(
            group.spec, group.signers[member], group.verify, updates[i], 1.0, transport,
            SMALL_PARAMS, step_timeout_s=TIMEOUT, executor=pool,
        ))
    results = dict(zip(group.members, await asyncio.gather(*tasks, return_exceptions=True),
                       strict=True))

    for member in honest:
        assert isinstance(results[member], SecAggError), (member, repr(results[member]))
    revealed = revealed_to_decryptor(group, d)
    for victim in honest:
        # A and D hold one share of each secret of every member themselves
        seeds = revealed[(victim, SEED_SHARE)] + 2
        keys = revealed[(victim, MASK_KEY_SHARE)] + 2
        assert seeds < t or keys < t, (victim, seeds, keys, t)
    honest_unmasks = [s for s, r, data in group.network.log
                      if s in honest and peek_binding(data)[1] is Step.UNMASK]
    assert honest_unmasks == []


async def test_an_honest_round_still_confirms_and_completes(pool) -> None:
    """The stricter check costs an honest group nothing."""
    from fedswarm.secagg.session import AggregationResult

    group = Group(6)
    updates = random_updates(6, N_PARAMS, seed=12)
    results = await asyncio.gather(*(
        run_secure_aggregation(
            group.spec, group.signers[m], group.verify, updates[i], 1.0,
            group.network.transport(m), SMALL_PARAMS, step_timeout_s=TIMEOUT, executor=pool,
        )
        for i, m in enumerate(group.members)
    ))
    assert all(isinstance(r, AggregationResult) for r in results)
