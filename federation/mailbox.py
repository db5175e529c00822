"""Incoming blobs, sorted by (kind, round) until the round loop asks for them.

Peers do not move through rounds in lock-step: a fast peer may send its round-5
update while we are still training round 5, or a late one may send round 4 after
we moved on. The mailbox holds messages for the current and a few future rounds,
refuses anything older (a replay or a straggler we no longer wait for), and keeps
its memory bounded per sender so a hostile member cannot fill it.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field

MAX_ROUNDS_AHEAD = 3


class MailboxRejected(Exception):
    """A message was refused; ``reason`` is a short machine-friendly word."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Letter:
    sender: str
    round: int
    kind: str
    payload: bytes


@dataclass
class _Slot:
    queue: asyncio.Queue[Letter] = field(default_factory=asyncio.Queue)
    bytes_by_sender: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class Mailbox:
    """Per-(kind, round) queues with a moving window of acceptable rounds."""

    def __init__(self, *, max_bytes_per_sender_per_round: int) -> None:
        self._slots: dict[tuple[str, int], _Slot] = {}
        self._oldest_round = 0
        self._limit = max_bytes_per_sender_per_round

    @property
    def oldest_round(self) -> int:
        return self._oldest_round

    def advance(self, oldest_round: int) -> None:
        """Drop everything for rounds before ``oldest_round`` and refuse them from now on."""
        self._oldest_round = max(self._oldest_round, oldest_round)
        for key in [k for k in self._slots if k[1] < self._oldest_round]:
            del self._slots[key]

    def put(self, letter: Letter) -> None:
        """File ``letter`` or raise ``MailboxRejected`` saying why not."""
        if letter.round < self._oldest_round:
            raise MailboxRejected(
                "old_round", f"round {letter.round} is before {self._oldest_round}"
            )
        if letter.round > self._oldest_round + MAX_ROUNDS_AHEAD + 1:
            raise MailboxRejected(
                "future_round", f"round {letter.round} is too far ahead of {self._oldest_round}"
            )
        slot = self._slots.setdefault((letter.kind, letter.round), _Slot())
        used = slot.bytes_by_sender[letter.sender] + len(letter.payload)
        if used > self._limit:
            raise MailboxRejected(
                "over_quota", f"{used} bytes from one sender for round {letter.round}"
            )
        slot.bytes_by_sender[letter.sender] = used
        slot.queue.put_nowait(letter)

    async def get(self, kind: str, round: int, timeout: float) -> Letter:
        """Wait up to ``timeout`` seconds for the next letter of ``kind`` in ``round``."""
        slot = self._slots.setdefault((kind, round), _Slot())
        return await asyncio.wait_for(slot.queue.get(), timeout=max(timeout, 0.0))

    def drain(self, kind: str, round: int) -> list[Letter]:
        """Take every letter already waiting for ``kind`` in ``round`` without blocking."""
        slot = self._slots.get((kind, round))
        letters: list[Letter] = []
        while slot is not None and not slot.queue.empty():
            letters.append(slot.queue.get_nowait())
        return letters

    async def collect(
        self,
        kind: str,
        round: int,
        senders: Collection[str],
        deadline: float,
        on_reject: Callable[[str, str], None],
    ) -> AsyncIterator[Letter]:
        """Yield the first letter of ``kind`` from each of ``senders`` until ``deadline``.

        ``deadline`` is a ``time.monotonic()`` value. A letter from anyone else, or a
        second one from the same sender, is reported through ``on_reject`` and skipped:
        a group exchange takes exactly one contribution per member.
        """
        pending = set(senders)
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                letter = await self.get(kind, round, remaining)
            except TimeoutError:
                return
            if letter.sender not in pending:
                on_reject(letter.sender, f"{kind} from a peer outside the group or sent twice")
                continue
            pending.discard(letter.sender)
            yield letter
