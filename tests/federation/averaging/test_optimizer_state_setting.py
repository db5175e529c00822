"""[federation] average_optimizer_state: a mismatch between members says why.

Members that disagree on the setting send vectors of different lengths (adapter only,
or adapter + AdamW exp_avg). The daemon's own plain averaging refuses such an update;
the reason it logs must name the key, or an operator would only see "wrong size".
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
from fedswarm.federation.averaging.plain import plain_group_average
from fedswarm.federation.link import FunctionLink
from fedswarm.federation.round import RoundContext
from fedswarm.learning.moment_averaging import averaged_length, explain_refusal

from bench.quality_transport import MailboxNetwork

ADAPTER_SIZE = 64


async def test_a_member_with_the_other_setting_is_refused_and_the_log_names_the_key() -> None:
    members = ["peer-a", "peer-b", "peer-c"]
    with_moments = {"peer-a": True, "peer-b": True, "peer-c": False}
    network = MailboxNetwork(members)
    network.advance(1)
    refusals: dict[str, list[str]] = {m: [] for m in members}
    deadline = time.monotonic() + 5.0

    async def member(me: str) -> list[str]:
        size = averaged_length(ADAPTER_SIZE, with_moments[me])
        ctx = RoundContext(
            me=me, round=1, members=tuple(members), link=FunctionLink(network.sender(me)),
            mailbox=network.mailboxes[me], deadline=deadline, on_reject=lambda *_: None)
        out = await plain_group_average(
            ctx, np.full(size, 0.1, np.float32), 1.0,
            on_reject=lambda peer, why: refusals[me].append(
                f"{peer}: {explain_refusal(why, ADAPTER_SIZE, with_moments[me])}"))
        return sorted(out.survivors)

    survivors = dict(zip(members, await asyncio.gather(*(member(m) for m in members)),
                         strict=True))

    assert survivors["peer-a"] == ["peer-a", "peer-b"]  # too few for a round: it aborts
    assert survivors["peer-c"] == ["peer-c"]
    assert len(refusals["peer-a"]) == 1 and refusals["peer-a"][0].startswith("peer-c: ")
    assert "average_optimizer_state" in refusals["peer-a"][0]
    assert "we send 128 values" in refusals["peer-a"][0]
    assert all("average_optimizer_state" in why for why in refusals["peer-c"])
    assert len(refusals["peer-c"]) == 2


def test_other_refusals_are_left_as_they_are() -> None:
    assert explain_refusal("update contains NaN or Inf", ADAPTER_SIZE, True) == \
        "update contains NaN or Inf"
