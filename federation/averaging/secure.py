"""Carry the secure-aggregation protocol over a ``Link`` and the round's mailbox.

``fedswarm.secagg`` knows nothing of the network: it asks for a ``Transport`` with
``send`` and ``receive``. ``LinkTransport`` is that transport (one message kind,
``secagg``, filed by round in the mailbox); ``SecureAggregation`` holds what a member
needs for every session (its key, how to check others', the HE worker pool) and turns
the protocol's result into a ``GroupAverage`` that keeps its error bound.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fedswarm.secagg.errors import MismatchedLengthsError, SecAggError
from fedswarm.secagg.params import PROTOCOL_NAME, SecAggParams, params_for_protocol
from fedswarm.secagg.session import GroupSpec, run_secure_aggregation
from fedswarm.secagg.signing import Signer

from ..errors import RoundAbortedError, SettingsMismatchError
from ..groups.plan import group_id
from ..link import SECAGG_KIND, Link
from ..mailbox import Mailbox
from ..round import RoundContext
from .bounds import check_group_average
from .result import GroupAverage

KIND = SECAGG_KIND

log = logging.getLogger("fedswarm.federation.secagg")


class LinkTransport:
    """``secagg.Transport`` over a member's ``Link`` and the round's mailbox.

    Protocol messages up to the link's ``max_message_bytes`` (keys, shares, the
    context, survivor sets, confirmations, unmask shares) go as messages: a round sends
    about fifty of them, and a stream each cost more than the round's cryptography on
    a small model. Uploads, the encrypted sum and large results go as acknowledged
    blobs. The protocol needs no acknowledgement of the small ones: every step waits
    for what it needs until its deadline and treats silence as a dropout.
    """

    def __init__(self, link: Link, mailbox: Mailbox, round: int) -> None:
        self._link = link
        self._mailbox = mailbox
        self._round = round

    async def send(self, recipient: str, data: bytes) -> None:
        """Deliver, or raise; a failure is logged here because the protocol treats it as
        the recipient's silence and says no more (which member could not reach which is
        what an operator needs when a group keeps losing uploads)."""
        try:
            if len(data) <= self._link.max_message_bytes:
                await self._link.send_message(recipient, KIND, self._round, data)
            else:
                await self._link.send_blob(recipient, KIND, self._round, data)
        except Exception as exc:
            log.warning("round %d: secure-aggregation message of %d bytes to %s not "
                        "delivered: %s: %s", self._round, len(data), recipient[-8:],
                        type(exc).__name__, exc)
            raise

    async def receive(self, timeout: float) -> tuple[str, bytes]:
        letter = await self._mailbox.get(KIND, self._round, timeout)
        return letter.sender, letter.payload


@dataclass(frozen=True)
class SecureAggregation:
    """A member's standing secure-aggregation setup; ``average`` runs one session."""

    federation_id: str
    signer: Signer
    verify: Callable[[str, bytes, bytes], bool]
    executor: Callable[[], concurrent.futures.ProcessPoolExecutor]
    """Where HE runs, looked up per session: a daemon replaces a pool that failed."""
    step_timeout_s: float
    protocol: str = PROTOCOL_NAME
    """``[federation] secure_aggregation``: whose default parameters a session uses."""
    spool_dir: Path | None = None
    """Where this member, as the aggregator, spools uploads (secagg/spool.py); a daemon
    passes ``<state dir>/spool``. None: the library's folder in the system temp dir."""

    async def average(
        self,
        ctx: RoundContext,
        vector: np.ndarray,
        weight: float,
        params: SecAggParams | None = None,
    ) -> GroupAverage:
        """Securely average ``vector`` with the group; raises ``RoundAbortedError``.

        The result is refused (``RoundAbortedError``) unless it lies within what clipped
        honest inputs produce (``bounds.check_group_average``).
        """
        spec = GroupSpec(
            federation_id=self.federation_id,
            group_id=group_id(ctx.round, ctx.members),
            round=ctx.round,
            members=ctx.members,
            min_survivors=ctx.min_contributors,
        )
        started = time.monotonic()
        params = params or params_for_protocol(self.protocol)
        try:
            result = await run_secure_aggregation(
                spec,
                self.signer,
                self.verify,
                vector,
                weight,
                LinkTransport(ctx.link, ctx.mailbox, ctx.round),
                params,
                step_timeout_s=self.step_timeout_s,
                executor=self.executor(),
                spool_dir=self.spool_dir,
                moved_on=ctx.moved_on,
            )
        except MismatchedLengthsError as exc:
            raise SettingsMismatchError(f"secure aggregation failed: {exc}") from exc
        except SecAggError as exc:
            raise RoundAbortedError(f"secure aggregation failed: {exc}") from exc
        log.info("round %d secure aggregation phases (s): %s", ctx.round,
                 " ".join(f"{k[:-2]}={v:.3f}" for k, v in result.timings.items()))
        average = GroupAverage(
            average=result.average,
            total_weight=result.total_weight,
            survivors=list(result.survivors),
            dropped=list(result.dropped),
            protocol=params.protocol,
            aggregator=result.aggregator,
            decryptor=result.decryptor,
            bytes_sent=result.bytes_sent,
            bytes_received=result.bytes_received,
            timings={**result.timings, "aggregate_s": time.monotonic() - started},
            error_bound=result.error_bound,
            value_bound=result.value_bound,
            group_noise_multiplier=result.effective_noise_multiplier,
        )
        # D (or any member, through its masked vector or weight slot) could have put
        # anything in the sum: refuse what honest clipped inputs cannot produce.
        return check_group_average(
            average, weight, params, weight_tolerance=params.weight_resolution
        )
