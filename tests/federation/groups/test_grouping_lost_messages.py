"""A group message lost once is sent again: one failed send does not cost the window.

Among 16 daemons one invitation failed ("closed the stream while negotiating"): its
member waited for an invitation that never came, its group waited out the 90 s window,
and the skew cost the federation two more windows (docs/reliability.md). Here every
member's first group message to each peer fails once, over the real agreement and
``form_group``, with an in-memory link.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

from fedswarm.federation.groups.agreement import AgreementConfig, Formed
from fedswarm.federation.groups.formation import form_group
from fedswarm.federation.link import FunctionLink
from fedswarm.federation.mailbox import Letter, Mailbox

NAMES = ["m0", "m1", "m2", "m3"]
WINDOW = AgreementConfig(invite_window=6.0, final_grace=2.0)


class LossyNetwork:
    """Mailboxes per member; a send for which ``fails(sender, recipient, try)`` holds raises."""

    def __init__(self, fails: Callable[[str, str, int], bool]) -> None:
        self.mailboxes = {n: Mailbox(max_bytes_per_sender_per_round=2**20) for n in NAMES}
        self.fails = fails
        self.tries: Counter[tuple[str, str]] = Counter()

    def link(self, me: str) -> FunctionLink:
        async def send(peer: str, kind: str, round: int, payload: bytes) -> None:
            self.tries[(me, peer)] += 1
            if self.fails(me, peer, self.tries[(me, peer)]):
                raise ConnectionError(f"the stream to {peer} was closed while negotiating")
            self.mailboxes[peer].put(Letter(me, round, kind, payload))

        return FunctionLink(send)


async def _agree(network: LossyNetwork, config: AgreementConfig,
                 names: list[str] = NAMES) -> tuple[list[object], float]:
    """Every one of ``names`` runs ``form_group``; their outcomes and the time it took."""
    started = time.monotonic()
    outcomes = await asyncio.gather(*(
        form_group(me=name, round=1, view=NAMES, group_size=4, link=network.link(name),
                   mailbox=network.mailboxes[name], config=config,
                   on_reject=lambda peer, why: None)
        for name in names
    ))
    return list(outcomes), time.monotonic() - started


async def test_a_group_forms_at_once_though_every_first_message_is_lost() -> None:
    network = LossyNetwork(lambda sender, recipient, attempt: attempt == 1)
    outcomes, took = await _agree(network, WINDOW)
    assert all(isinstance(o, Formed) and o.members == tuple(NAMES) for o in outcomes), outcomes
    assert took < WINDOW.invite_window  # formed by the retries, not by the window running out
    assert sum(network.tries.values()) == 9 + 6  # the 6 lost first messages, sent again


async def test_without_losses_each_message_is_sent_once() -> None:
    network = LossyNetwork(lambda sender, recipient, attempt: False)
    outcomes, _ = await _agree(network, WINDOW)
    assert all(isinstance(o, Formed) and o.members == tuple(NAMES) for o in outcomes)
    # the leader's invitation and final to each of 3 followers, and their acceptances
    assert sum(network.tries.values()) == 9


async def test_a_member_that_is_down_does_not_hold_the_group_through_the_resends() -> None:
    """Only first tries are waited for before aggregation; later ones go on behind it."""
    network = LossyNetwork(lambda sender, recipient, attempt: recipient == "m3")
    config = AgreementConfig(invite_window=2.0, final_grace=1.0)
    outcomes, took = await _agree(network, config, names=NAMES[:3])
    assert all(isinstance(o, Formed) and o.members == ("m0", "m1", "m2") for o in outcomes)
    # the window, not the window plus the 3.5 s of pauses before the last resend to m3
    assert took < config.invite_window + 1.5
    await asyncio.sleep(4.0)
    assert network.tries[("m0", "m3")] == 2 * 4  # invitation and final, each tried 4 times
