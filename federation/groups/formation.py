"""Drive the group-agreement state machine over a ``Link`` for one round.

``agreement`` decides; this module only feeds it the messages that arrive
(kind ``group`` in the mailbox, sender authenticated by the blob signature),
sends what it asks to send, and polls its timers until it reaches an outcome.
Sends run as background tasks so one unreachable peer never delays the others, and a
send that fails is tried again a few times in the background (``link.resend``): one lost
invitation used to cost its group the whole window. Only first tries are waited for
before aggregation starts, so a member that is down costs no more than it did.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from ..errors import GroupMessageError
from ..link import GROUP_KIND, Link, resend, send_before
from ..mailbox import Mailbox
from .agreement import AgreementConfig, GroupAgreement, Outcome, Outgoing
from .messages import decode_message

log = logging.getLogger("fedswarm.federation.groups")

KIND = GROUP_KIND
POLL_S = 0.2

_RESENDING: set[asyncio.Task[int]] = set()
"""Later tries still going after ``form_group`` returned (asyncio keeps tasks weakly)."""


async def form_group(
    *,
    me: str,
    round: int,
    view: Sequence[str],
    group_size: int,
    link: Link,
    mailbox: Mailbox,
    config: AgreementConfig,
    on_reject: Callable[[str, str], None],
    seed: bytes = b"",
    view_now: Callable[[], Sequence[str]] | None = None,
    up_now: Callable[[], Sequence[str]] | None = None,
    awaited: Callable[[str], bool] | None = None,
    behind: Callable[[str], bool] | None = None,
    past: Callable[[str], bool] | None = None,
    moved_on: Callable[[str], bool] | None = None,
) -> Outcome:
    """Agree with peers on this round's group; returns ``Formed`` or ``Alone``.

    ``view`` plans our own group; ``view_now`` is what we see present while judging
    invitations (``agreement.PlanMatch``), so a newcomer's invitation can be accepted
    once its heartbeat arrives; ``up_now`` is whom we see up: as a leader we stop
    waiting for invitees that are not from half the window on, as a stand-in we invite
    only those that are (``GroupAgreement``). ``awaited(peer)``: ``peer`` still works towards this
    round, so no stand-in replaces it; ``behind(peer)``: ``peer`` is still finishing an
    earlier round, so windows stretch for it; ``past(peer)``: ``peer`` has left this round's
    grouping, so nobody waits for it; ``moved_on(peer)``: ``peer`` is in a later round, so
    a follower that accepted it stops waiting for its final (``GroupAgreement``).
    """
    agreement = GroupAgreement(
        me, round, view, time.monotonic(), group_size=group_size, seed=seed, config=config,
        view_now=view_now, up_now=up_now, awaited=awaited, behind=behind, past=past,
        moved_on=moved_on,
    )
    sends: set[asyncio.Task[int]] = set()

    async def send(recipient: str, payload: bytes) -> int:
        sent = await send_before(link, recipient, KIND, round, payload, deadline=None)
        if not sent:
            again = asyncio.create_task(resend(link, recipient, KIND, round, payload))
            _RESENDING.add(again)
            again.add_done_callback(_RESENDING.discard)
        return sent

    def dispatch(outgoing: list[Outgoing]) -> None:
        for item in outgoing:
            payload = item.message.encode()
            for recipient in item.recipients:
                if recipient == me:
                    continue
                task = asyncio.create_task(send(recipient, payload))
                sends.add(task)
                task.add_done_callback(sends.discard)

    dispatch(agreement.start())
    stood_in = False
    while agreement.outcome is None:
        if agreement.stood_in and not stood_in:
            stood_in = True
            planned = agreement.planned or ()
            log.info("round %d: no invitation from %s before the stand-in time; leading "
                     "the rest of the planned group", round,
                     [peer[-8:] for peer in planned[: agreement.rank or 0]])
        try:
            letter = await mailbox.get(KIND, round, POLL_S)
        except TimeoutError:
            dispatch(agreement.poll(time.monotonic()))
            continue
        try:
            message = decode_message(letter.payload)
        except GroupMessageError as exc:
            on_reject(letter.sender, f"bad group message: {exc}")
            continue
        dispatch(agreement.receive(message, letter.sender, time.monotonic()))
        for leader, why in agreement.follower.refused:
            # views that differ for a heartbeat or two make this normal: logged, not counted
            log.info("round %d: group invitation from %s refused: %s", round, leader[-8:], why)
        agreement.follower.refused.clear()
        dispatch(agreement.poll(time.monotonic()))
    if sends:
        # Let finals and dissolutions reach followers before aggregation starts (first
        # tries only: the later ones go on in the background).
        await asyncio.wait(sends, timeout=10)
    outcome = agreement.outcome
    assert outcome is not None
    return outcome

