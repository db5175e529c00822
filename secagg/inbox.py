"""Receives, verifies and buffers a round's messages so steps can arrive in any order.

A fast peer may send step n+1 before a slow member has finished step n, so messages are
kept per (step, sender) until the session asks for them.  Anything that fails a check
is recorded in `rejected` and dropped: a bad or foreign message never ends the session.
The buffer holds at most one message per (step, sender), so it is bounded by the group;
a streamed step (UPLOAD, chunks.py) holds at most the chunk count its vector length
fixes per sender, and only in order: the next index expected from that sender, never a
repeat, never one past the count.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from fedswarm.secagg.chunks import check_chunk, read_prefix
from fedswarm.secagg.errors import (
    ChunkOrderError,
    ContextMismatchError,
    NotEnoughSurvivorsError,
    ProtocolViolationError,
    ReplayError,
    RoundAbortedError,
    SecAggError,
    UnexpectedStepError,
)
from fedswarm.secagg.messages import Message, RoundBinding, Step, decode_message
from fedswarm.secagg.payloads import ABORT_NOT_ENOUGH_SURVIVORS, AbortPayload
from fedswarm.secagg.signing import Verifier
from fedswarm.secagg.transport import Transport

MAX_REJECTED = 1000
MOVED_ON_POLL_S = 1.0
"""How often a wait looks again at whether the peers it waits for have moved on."""
MOVED_ON_GRACE_S = 10.0
"""How long a wait goes on after every peer it waits for has moved on: what a peer sent
just before it left may still be on its way."""


@dataclass(frozen=True)
class Roles:
    """Who may send which step to whom in this group and round."""

    members: frozenset[str]
    aggregator: str
    decryptor: str

    def check(self, step: Step, sender: str, recipient: str) -> None:
        """Raise UnexpectedStepError if sender may not send step to recipient."""
        if sender not in self.members:
            raise ProtocolViolationError(f"{sender!r} is not a member of this group")
        rules: dict[Step, tuple[str | None, str | None]] = {
            Step.CONTEXT: (self.decryptor, None),
            Step.UPLOAD: (None, self.aggregator),
            Step.SURVIVORS: (self.aggregator, None),
            Step.SUM: (self.aggregator, self.decryptor),
            Step.UNMASK: (None, self.decryptor),
            Step.RESULT: (self.decryptor, None),
        }
        allowed_sender, allowed_recipient = rules.get(step, (None, None))
        if allowed_sender is not None and sender != allowed_sender:
            raise UnexpectedStepError(f"{step.name} may only come from {allowed_sender!r}")
        if allowed_recipient is not None and recipient != allowed_recipient:
            raise UnexpectedStepError(f"{step.name} may only go to {allowed_recipient!r}")
        if step is Step.ABORT and sender not in (self.aggregator, self.decryptor):
            raise UnexpectedStepError("only the aggregator or decryptor may abort")


class MovedOnTimer:
    """For one wait: whether every one of some peers has looked moved on for a grace.

    ``Inbox.next`` uses one to stop waiting on peers that left the round, the session
    one to stop sending to a recipient that left it; a peer seen back in the round (a
    view that changed its mind) starts the grace again.
    """

    def __init__(self, moved_on: Callable[[str], bool], grace_s: float) -> None:
        self._moved_on = moved_on
        self._grace_s = grace_s
        self._since: float | None = None

    def expired(self, peers: Collection[str]) -> bool:
        now = time.monotonic()
        if not peers or not all(self._moved_on(peer) for peer in peers):
            self._since = None
            return False
        if self._since is None:
            self._since = now
        return now - self._since >= self._grace_s


class Inbox:
    """The session's only reader of the transport."""

    def __init__(
        self,
        transport: Transport,
        binding: RoundBinding,
        me: str,
        verify: Verifier,
        roles: Roles,
        moved_on: Callable[[str], bool] | None = None,
        moved_on_grace_s: float = MOVED_ON_GRACE_S,
    ) -> None:
        """``moved_on(peer)``: whether ``peer`` has left this round (the daemon asks its
        signed heartbeats: a later round, or none within the down time). Such a peer sends
        nothing more for this round, so a wait for it alone ends ``moved_on_grace_s``
        later instead of at its deadline.
        """
        self._transport = transport
        self._binding = binding
        self._me = me
        self._verify = verify
        self._roles = roles
        self._context_hash: bytes | None = None
        self._buffer: dict[tuple[Step, str, int], Message] = {}
        self._seen: set[tuple[Step, str]] = set()
        self._chunk_counts: dict[Step, int] = {}  # streamed steps: count fixed by KEYS
        self._next_chunk: dict[tuple[Step, str], int] = {}
        self.rejected: list[SecAggError] = []
        self.role_aborted = False  # an ABORT from the aggregator or decryptor arrived
        self._moved_on = moved_on
        self._moved_on_grace_s = moved_on_grace_s
        self.left: set[str] = set()  # peers a wait gave up on because they left the round
        self.bytes_received = 0
        self.cpu_s = 0.0  # CPU spent checking messages (sha256 of large payloads)

    def set_context(self, context_hash: bytes) -> None:
        """Fix the round's context; drop buffered messages bound to any other."""
        self._context_hash = context_hash
        for key, message in list(self._buffer.items()):
            if message.context_hash != context_hash and message.step not in (Step.CONTEXT,
                                                                                Step.ABORT):
                del self._buffer[key]
                self._reject(ContextMismatchError(f"{message.step.name} under another context"))

    def expect_chunks(self, step: Step, count: int) -> None:
        """step arrives as count chunks per sender (chunks.py), in order, once each."""
        self._chunk_counts[step] = count

    def _reject(self, error: SecAggError) -> None:
        if len(self.rejected) < MAX_REJECTED:
            self.rejected.append(error)

    def accept(self, transport_sender: str, data: bytes) -> None:
        """Check one raw message and buffer it, or record why it was rejected."""
        self.bytes_received += len(data)
        start = time.thread_time()
        try:
            self._accept(transport_sender, data)
        finally:
            self.cpu_s += time.thread_time() - start

    def _accept(self, transport_sender: str, data: bytes) -> None:
        try:
            message = decode_message(
                data, self._binding, self._me, self._verify, self._context_hash
            )
            if message.sender != transport_sender:
                raise ProtocolViolationError("signed sender differs from the transport sender")
            self._roles.check(message.step, message.sender, message.recipient)
            if message.step in self._chunk_counts:
                message = self._chunk(message, self._chunk_counts[message.step])
                self._buffer[(message.step, message.sender, message.chunk)] = message
                return
            key = (message.step, message.sender)
            if key in self._seen:
                raise ReplayError(f"duplicate {message.step.name} from {message.sender!r}")
            self._seen.add(key)
            self._buffer[(message.step, message.sender, 0)] = message
            if message.step is Step.ABORT:
                self.role_aborted = True  # Roles.check: only A or D may send one
        except SecAggError as error:
            self._reject(error)

    def _chunk(self, message: Message, expected_count: int) -> Message:
        """Check a streamed step's chunk prefix; its payload becomes the body after it."""
        index, count, body = read_prefix(message.payload)
        check_chunk(index, count, expected_count)
        stream = (message.step, message.sender)
        wanted = self._next_chunk.get(stream, 0)
        if wanted >= expected_count:
            raise ChunkOrderError(
                f"{message.step.name} chunk {index} from {message.sender!r} after its stream "
                "ended or broke"
            )
        if index < wanted:
            # a repeat (a transport may duplicate): refused, the stream goes on
            raise ChunkOrderError(
                f"{message.step.name} chunk {index} from {message.sender!r} repeats an "
                f"earlier chunk (next is {wanted})"
            )
        if index > wanted:
            # a gap or a reordering: the stream is broken from here on, so the sender's
            # later chunks are refused too and its contribution never completes
            self._next_chunk[stream] = expected_count
            raise ChunkOrderError(
                f"{message.step.name} chunk {index} from {message.sender!r} skips ahead of "
                f"chunk {wanted}"
            )
        self._next_chunk[stream] = index + 1
        return dataclasses.replace(message, payload=body, chunk=index)

    def moved_on_timer(self) -> MovedOnTimer | None:
        """A fresh timer for one wait or send, or None when nobody said how to tell."""
        if self._moved_on is None:
            return None
        return MovedOnTimer(self._moved_on, self._moved_on_grace_s)

    def take(self, step: Step, sender: str) -> Message | None:
        return self._buffer.pop((step, sender, 0), None)

    async def next(
        self, steps: Collection[Step], senders: Collection[str], deadline: float
    ) -> Message | None:
        """The next buffered or arriving message of one of steps from one of senders.

        Returns None once the monotonic deadline passes, or ``moved_on_grace_s`` after
        every one of senders has left the round (``left`` names them then): a
        member whose aggregator gave up and went on used to wait out three step timeouts
        (8 minutes among 32 daemons). An ABORT from the aggregator or the decryptor ends
        any other wait at once (``RoundAbortedError``).
        """
        timer = self.moved_on_timer()
        while True:
            for key in self._buffer:
                if key[0] in steps and key[1] in senders:
                    return self._buffer.pop(key)
            if Step.ABORT not in steps:
                for role in (self._roles.aggregator, self._roles.decryptor):
                    abort = self._buffer.get((Step.ABORT, role, 0))
                    if abort is not None:
                        raise abort_error(abort.payload)
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                return None
            if timer is not None and timer.expired(senders):
                self.left.update(senders)
                return None
            wait = remaining if timer is None else min(remaining, MOVED_ON_POLL_S)
            try:
                sender, data = await self._transport.receive(wait)
            except TimeoutError:
                if timer is None:
                    return None
                continue  # the loop checks the deadline and who has moved on
            self.accept(sender, data)

    async def gather(
        self, step: Step, senders: Collection[str], deadline: float
    ) -> dict[str, Message]:
        """Messages of one step from as many of senders as arrive before the deadline."""
        wanted = set(senders)
        got: dict[str, Message] = {}
        while wanted:
            message = await self.next((step,), wanted, deadline)
            if message is None:
                break
            got[message.sender] = message
            wanted.discard(message.sender)
        return got


def abort_error(payload: bytes | memoryview) -> RoundAbortedError:
    """The error a role's ABORT stands for."""
    abort = AbortPayload.decode(payload)
    if abort.code == ABORT_NOT_ENOUGH_SURVIVORS:
        return NotEnoughSurvivorsError(f"round aborted: {abort.reason}")
    return RoundAbortedError(f"round aborted: {abort.reason}")
