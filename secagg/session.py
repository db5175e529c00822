"""One member's side of a secure-aggregation round (the daemon's entry point).

Every member of a group calls run_secure_aggregation concurrently with the same
GroupSpec.  Roles come from assign_roles; each step waits at most step_timeout_s for
peers and treats silent peers as dropped.  Steps (see messages.Step):

CONTEXT  D publishes a fresh public BFV context (no secret/relin/galois keys).
KEYS     everyone publishes two X25519 public keys and a self-mask seed commitment.
SHARES   everyone Box-encrypts to every other member its Shamir shares of its mask
         private key and self-mask seed.  The mask set M = who completed both steps.
UPLOAD   everyone clips, quantises and masks (in a worker).  Members other than A and D
         encrypt and send to A.  D never uploads: it keeps its masked vector and adds it
         to the decrypted sum itself.  A does not encrypt its own either: it adds it to
         the encrypted sum as a plaintext (BFV add_plain, see plain_add).
SURVIVORS A checks each upload chunk as it arrives and spools it to disk (spool.py),
         its own plaintext words too; a member is a survivor once all its chunks are
         in. A sends the signed survivor set S (D included) to everyone.
CONFIRM  members tell each other which survivor set they saw; any disagreement
         aborts before a single share is revealed, and more than half of the mask set
         other than A and D must confirm the same set (defeats a split view even by
         A and D together).
SUM      A, once it has confirmed, sums the spool chunk index by chunk index and
         streams each SUM chunk to D as it is made; D decrypts each chunk as it arrives
         into its own masked vector.
UNMASK   members send D seed shares for S and mask-key shares for M \\ S, never both.
RESULT   D reconstructs, unmasks, dequantises and publishes the signed average in chunks.

UPLOAD, SUM and RESULT are streamed as signed chunks (chunks.py), their count fixed by the
vector length agreed in KEYS.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import nacl.exceptions
import nacl.public
import numpy as np
from fedswarm.secagg.accumulator import CiphertextAccumulator
from fedswarm.secagg.chunks import (
    add_prefix,
    chunk_ciphertexts,
    chunk_slots,
    result_chunk_values,
    stream_chunk_count,
)
from fedswarm.secagg.distributed_dp import GroupNoise, effective_noise_multiplier
from fedswarm.secagg.errors import (
    CiphertextLayoutError,
    ContextMismatchError,
    MessageFormatError,
    MismatchedLengthsError,
    NotEnoughSurvivorsError,
    ParameterSecurityError,
    ProtocolViolationError,
    RoleUnavailableError,
    RoundAbortedError,
    SecAggError,
    SpoolError,
    SurvivorSetMismatchError,
    TooFewContributorsError,
    VectorShapeError,
)
from fedswarm.secagg.he import (
    EncryptJob,
    EncryptOutput,
    add_own_mod_p,
    create_context,
    encrypt_contribution,
    load_public_context,
    make_executor,
    mask_contribution,
    segment_jobs,
)
from fedswarm.secagg.inbox import MOVED_ON_GRACE_S, MOVED_ON_POLL_S, Inbox, Roles, abort_error
from fedswarm.secagg.masking import (
    derive_mask_key,
    pairwise_secret,
    pairwise_sign,
    public_key_of,
    self_mask_commitment,
)
from fedswarm.secagg.messages import RoundBinding, Step, encode_message
from fedswarm.secagg.params import SecAggParams, batching_plain_modulus
from fedswarm.secagg.payloads import (
    ABORT_NOT_ENOUGH_SURVIVORS,
    ABORT_OTHER,
    MASK_KEY_SHARE,
    SEED_SHARE,
    AbortPayload,
    ContextPayload,
    DigestPayload,
    KeysPayload,
    ResultPayload,
    ShareBundle,
    SumPayload,
    SurvivorsPayload,
    UnmaskPayload,
    UploadPayload,
)
from fedswarm.secagg.plain_add import PlainAddend, plain_addend
from fedswarm.secagg.quantise import (
    MAX_RANGE_SHIFT,
    QuantisationGrid,
    max_weight_class,
    quantise_weight,
    range_shift,
    validate_update,
    weight_class,
)
from fedswarm.secagg.roles import assign_roles
from fedswarm.secagg.shamir import Share, reconstruct_secret, split_secret, threshold_for
from fedswarm.secagg.shares import ShareVault
from fedswarm.secagg.signing import Signer, Verifier
from fedswarm.secagg.spool import RoundSpool, default_directory, sum_window
from fedswarm.secagg.stream_decrypt import (
    SumChunkJob,
    SumChunkOutput,
    UnmaskJob,
    UnmaskOutput,
    decrypt_sum_chunk,
    unmask_segment,
)
from fedswarm.secagg.transport import Transport

MIN_GROUP_SIZE = 3  # with two members the average reveals the other member's update
MIN_CONTRIBUTORS = 3
"""Fewest members whose uploads may be in a sum that is unmasked and decrypted.

With two contributors (say a hostile member and a victim, in a group padded with a
peer that never shows up) the average gives the victim's update away. Every member
checks this before it sends an unmask share, and D before it decrypts. It must equal
``fedswarm.federation.round.MIN_GROUP_SIZE`` (secagg cannot import federation; a test
in tests/federation checks they match)."""
SEQUENTIAL_BROADCAST_BYTES = 64 << 20  # above this, one signed copy in flight at a time
ROLE_WAIT_FACTOR = 3  # waits on A or D cover their own waits on peers plus their work

T = TypeVar("T")


@dataclass(frozen=True)
class GroupSpec:
    """Which round of which group this is; members are sorted peer ids, self included."""

    federation_id: str
    group_id: str
    round: int
    members: tuple[str, ...]
    min_survivors: int = 0
    """Fewest survivors (A and D included) this member lets a revealed sum hold, beyond
    the Shamir threshold and ``MIN_CONTRIBUTORS``: the caller's ``contributor_floor`` of
    its planned group, so a hostile A cannot drop honest uploads until a victim's update
    is alone with colluders' (issue #19). 0: no more than those two."""


@dataclass(frozen=True)
class AggregationResult:
    """What a member gets back: the group's weighted average and how it was made."""

    average: np.ndarray
    total_weight: float
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    aggregator: str
    decryptor: str
    timings: dict[str, float]
    bytes_sent: int
    bytes_received: int
    rejected: tuple[str, ...] = field(default=())
    error_bound: float = 0.0  # largest |average - exact weighted average| per coordinate
    # Largest |coordinate| any honest input had: clip_norm / 2**range_shift on v3 (every
    # member's values lie within its own published range, the group takes the widest),
    # None on v2 (the clip itself). A result beyond it holds something no honest input
    # carries, though it may stay inside the clip (v3 decodes garbage within its fields).
    value_bound: float | None = None
    # group-level DP: the noise multiplier the accountant sees for this round's sum
    # (distributed_dp.effective_noise_multiplier on this group's grid); None without
    effective_noise_multiplier: float | None = None


async def run_secure_aggregation(
    spec: GroupSpec,
    signer: Signer,
    verify: Verifier,
    update: np.ndarray,
    weight: float,
    transport: Transport,
    params: SecAggParams,
    *,
    step_timeout_s: float = 60.0,
    executor: concurrent.futures.ProcessPoolExecutor | None = None,
    spool_dir: Path | None = None,
    moved_on: Callable[[str], bool] | None = None,
) -> AggregationResult:
    """Run this member's side of one round and return the group's average.

    spool_dir: where this member, when it is the aggregator, spools uploads until the
    sum is made (spool.py); default ``spool.default_directory()``. Its files are gone
    when this returns or raises.

    moved_on(peer): whether a member has left this round (the daemon reads its signed
    heartbeats: one names a later round, or none came within the down time). A wait on
    members who all left ends shortly after (``inbox.MOVED_ON_GRACE_S``) instead of at
    its step deadline; a member that lies about it only takes itself out of this round,
    as silence would.

    Raises NonFiniteUpdateError / VectorShapeError / InvalidWeightError before anything is
    sent, NotEnoughSurvivorsError or RoleUnavailableError when the round cannot finish,
    SpoolError when the aggregator cannot spool (a full disk), and ProtocolViolationError
    subclasses when a peer breaks the protocol.
    """
    prep_start = time.thread_time()
    params.validate()
    _check_spec(spec, signer.peer_id, params.group_noise)
    flat = validate_update(update)
    quantise_weight(weight, params)
    prep_cpu_s = time.thread_time() - prep_start
    own_executor = executor is None
    pool = make_executor(1) if executor is None else executor
    try:
        session = _Session(
            spec, signer, verify, flat, weight, transport, params, step_timeout_s, pool,
            spool_dir, moved_on,
        )
        session._charge("loop", prep_cpu_s)
        average, total_weight, survivors, dropped = await session.run()
    finally:
        if own_executor:
            pool.shutdown(wait=False, cancel_futures=True)
    return AggregationResult(
        average=average.reshape(np.shape(update)),
        total_weight=total_weight,
        survivors=survivors,
        dropped=dropped,
        aggregator=session.aggregator,
        decryptor=session.decryptor,
        timings=session.timings,
        bytes_sent=session.bytes_sent,
        bytes_received=session.inbox.bytes_received,
        rejected=tuple(f"{type(e).__name__}: {e}" for e in session.inbox.rejected),
        error_bound=session.grid().error_bound(total_weight),
        value_bound=(params.clip_norm / (1 << session.range_shift) if params.packed else None),
        effective_noise_multiplier=_effective_noise(session.grid(), params, flat.size),
    )


def _effective_noise(grid: QuantisationGrid, params: SecAggParams, n_values: int) -> float | None:
    if params.group_noise is None:
        return None
    return effective_noise_multiplier(
        params.group_noise.noise_multiplier, grid.sensitivity, n_values
    )


def _check_spec(spec: GroupSpec, me: str, noise: GroupNoise | None = None) -> None:
    if tuple(sorted(set(spec.members))) != spec.members:
        raise ProtocolViolationError("GroupSpec.members must be sorted and distinct")
    if me not in spec.members:
        raise ProtocolViolationError(f"{me!r} is not a member of group {spec.group_id!r}")
    if len(spec.members) < MIN_GROUP_SIZE:
        raise ParameterSecurityError(f"groups need at least {MIN_GROUP_SIZE} members")
    if spec.round < 0:
        raise ProtocolViolationError("round must be non-negative")
    if noise is not None and spec.min_survivors < noise.min_survivors:
        raise ParameterSecurityError(
            f"group-level DP noise is calibrated for at least {noise.min_survivors} "
            f"survivors; this session would reveal a sum of {spec.min_survivors}")
    if spec.min_survivors > len(spec.members):
        raise ParameterSecurityError(
            f"the group has {len(spec.members)} members, fewer than the "
            f"{spec.min_survivors} survivors this member requires")


class _Session:
    """State of one member in one round; run() walks the steps in order."""

    def __init__(
        self,
        spec: GroupSpec,
        signer: Signer,
        verify: Verifier,
        flat: np.ndarray,
        weight: float,
        transport: Transport,
        params: SecAggParams,
        step_timeout_s: float,
        executor: concurrent.futures.ProcessPoolExecutor,
        spool_dir: Path | None = None,
        moved_on: Callable[[str], bool] | None = None,
    ) -> None:
        self.spec = spec
        self.signer = signer
        self.me = signer.peer_id
        self.flat = flat
        self.weight = weight
        self.transport = transport
        self.params = params
        self.timeout = step_timeout_s
        self.executor = executor
        self.k = len(spec.members)
        self.t = threshold_for(self.k)
        # survivors needed before anything is revealed: the Shamir threshold, never
        # fewer than MIN_CONTRIBUTORS uploads in the sum, and the caller's floor
        self.floor = max(self.t, MIN_CONTRIBUTORS, spec.min_survivors)
        self.n_values = flat.size + 1  # plus the weight slot: what KEYS compares
        # BFV slots the encoded vector takes (v3 packs fields_per_slot values per slot)
        self.n_slots = -(-flat.size // params.fields_per_slot) + 1
        self.weight_class: int | None = None  # v3: the largest class in the mask set
        self.range_shift = 0  # v3: the smallest range shift in the mask set
        self.aggregator, self.decryptor = assign_roles(spec.members, spec.round, spec.group_id)
        self.binding = RoundBinding(spec.federation_id, spec.group_id, spec.round)
        roles = Roles(frozenset(spec.members), self.aggregator, self.decryptor)
        # a step's wait is the most a grace for messages in flight needs
        self.inbox = Inbox(transport, self.binding, self.me, verify, roles, moved_on,
                           min(MOVED_ON_GRACE_S, step_timeout_s))
        # UPLOAD, SUM and RESULT stream in chunks whose count the vector length fixes
        # (KEYS refuses a peer with another length, so every honest member counts the same)
        self.stream_chunks = stream_chunk_count(
            self.n_slots, params.slot_count, params.stream_chunk_ciphertexts
        )
        for step in (Step.UPLOAD, Step.SUM, Step.RESULT):  # all three cut the same way
            self.inbox.expect_chunks(step, self.stream_chunks)
        # A: checks uploads and makes the sum's windows; the spool holds the uploads
        self._accumulator: CiphertextAccumulator | None = None
        self.spool_dir = spool_dir
        self._spool: RoundSpool | None = None
        self._aborted = False  # this member (A or D) has broadcast its ABORT
        self._own_ready = 0.0  # A: when its own contribution was spooled (monotonic)
        self.context_hash = bytes(32)
        self.public_context = b""
        self.secret_context = b""
        self.keys: dict[str, KeysPayload] = {}
        self.vault = ShareVault()
        self.own_masked: np.ndarray | None = None  # D's masked vector, kept instead of sent
        self.timings: dict[str, float] = {"cpu_s": 0.0}
        self.bytes_sent = 0
        self._mark = time.monotonic()
        self._start = self._mark

    # -- plumbing -------------------------------------------------------------------

    def _lap(self, name: str) -> None:
        now = time.monotonic()
        self.timings[f"{name}_s"] = now - self._mark
        self._mark = now

    def _charge(self, part: str, cpu_s: float) -> None:
        """Add CPU to this member's total and keep the part, so benchmarks can show where."""
        self.timings["cpu_s"] += cpu_s
        self.timings[f"{part}_cpu_s"] = self.timings.get(f"{part}_cpu_s", 0.0) + cpu_s

    def _local_cpu(self, fn: Callable[[], T]) -> T:
        """Run a synchronous step on the loop thread and charge its CPU to this member."""
        start = time.thread_time()
        try:
            return fn()
        finally:
            self._charge("loop", time.thread_time() - start)

    async def _off_loop(self, part: str, fn: Callable[[], T]) -> T:
        """Run A's spool I/O (and the sum it feeds) in a thread and charge its CPU to part.

        Why: a disk that is slow or throttling writes would otherwise stall the event
        loop, and with it every other message of the daemon, for as long as a chunk takes
        to write. Each call is awaited before the next, so chunks stay in order.
        """

        def timed() -> tuple[T, float]:
            start = time.thread_time()
            result = fn()
            return result, time.thread_time() - start

        result, cpu_s = await asyncio.to_thread(timed)
        self._charge(part, cpu_s)
        return result

    async def _in_pool(self, fn: Callable[[Any], T], job: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, fn, job)

    def _left(self, role: str) -> str:
        """Why a role went silent, when we know: its heartbeats say it left the round."""
        return (" (it left the round: its heartbeat names a later round, or none came "
                "within the down time)") if role in self.inbox.left else ""

    def _deadline(self, factor: float = 1.0) -> float:
        return time.monotonic() + self.timeout * factor

    def _mask_binding(self) -> bytes:
        return self.binding.to_bytes() + self.context_hash

    def _mask_key_binding(self) -> bytes:
        """What mask keys are derived under: v3 adds the group's weight class.

        A member who told peers different weight classes would make them quantise on
        different grids; binding the class into every mask key turns that into masks
        that do not cancel (a garbage sum the bounds check refuses), not a quietly
        rescaled average.
        """
        if self.weight_class is None:
            return self._mask_binding()
        binding = (
            self._mask_binding()
            + b"weight-class"
            + bytes([self.weight_class])
            + b"range-shift"
            + bytes([self.range_shift])
        )
        if self.params.group_noise is not None:  # other noise, other grid: no sum
            binding += self.params.group_noise.describe()
        return binding

    def _published_range_shift(self) -> int:
        """v3's range shift, or 0 with group-level DP.

        Why 0: the shift reveals the member's largest |coordinate| to within a factor
        of two, a fact about this round's data that no noise covers. With group-level
        DP the grid is sized for the noise anyway (distributed_dp), so nothing is lost.
        """
        if self.params.group_noise is not None:
            return 0
        return self._local_cpu(lambda: range_shift(self.flat, self.params))

    def grid(self) -> QuantisationGrid:
        return QuantisationGrid.for_group(
            self.params, self.k, self.weight_class, self.range_shift
        )

    async def _send(
        self,
        recipient: str,
        step: Step,
        payload: bytes | bytearray,
        digest: bytes | None = None,
    ) -> bool:
        """Sign and send; False when the peer is unreachable (``_deliver`` says when)."""
        data = self._local_cpu(
            lambda: encode_message(
                self.signer, self.binding, step, recipient, self.context_hash, payload, digest
            )
        )
        try:
            await self._deliver(recipient, data)
        except Exception:  # any transport failure means "peer unreachable" here
            return False
        self.bytes_sent += len(data)
        return True

    async def _deliver(self, recipient: str, data: bytes) -> None:
        """``transport.send``, given up after a step's wait, or a grace after the recipient
        left the round (``Inbox.moved_on_timer``).

        Among 32 daemons a member's upload to an aggregator whose connection hung held
        its session 90 s past the group's ABORT, which it only read once the send gave
        up; by then the federation had finished the next round without it. A send the
        recipient has stopped waiting for is worth nothing.
        """
        timer = self.inbox.moved_on_timer()
        sending = asyncio.ensure_future(self.transport.send(recipient, data))
        deadline = self._deadline()
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"sending to {recipient!r} took a step's wait")
                if timer is not None and timer.expired((recipient,)):
                    raise TimeoutError(f"{recipient!r} moved on while we sent")
                wait = remaining if timer is None else min(remaining, MOVED_ON_POLL_S)
                done, _ = await asyncio.wait({sending}, timeout=wait)
                if done:
                    sending.result()
                    return
        finally:
            if not sending.done():
                sending.cancel()

    async def _broadcast(self, recipients: Iterable[str], step: Step, payload: bytes) -> None:
        """Send one payload to many; a large one (D's RESULT) one recipient at a time.

        Each recipient gets its own signed message, a copy of the payload: sent all at
        once, an 80 M-value average would be k - 1 copies of 320 MB in D's memory.
        """
        targets = [p for p in recipients if p != self.me]
        digest = self._local_cpu(lambda: hashlib.sha256(payload).digest())  # once, not per peer
        if len(payload) <= SEQUENTIAL_BROADCAST_BYTES:
            await asyncio.gather(*(self._send(p, step, payload, digest) for p in targets))
            return
        for peer in targets:
            await self._send(peer, step, payload, digest)

    async def _abort(self, reason: str, code: int = ABORT_NOT_ENOUGH_SURVIVORS) -> None:
        if self._aborted:
            return
        self._aborted = True
        payload = AbortPayload(code, reason).encode()
        await self._broadcast(self.spec.members, Step.ABORT, payload)

    # -- the round ------------------------------------------------------------------

    async def run(self) -> tuple[np.ndarray, float, tuple[str, ...], tuple[str, ...]]:
        """The round; A's spool files are removed however it ends (cancelled too).

        When A or D gives up (for a reason not announced yet), it tells the members at
        once: without A or D the round cannot finish, and an aggregator that had not
        received the context used to end its own session silently while its members,
        who had, waited through every later step (6 to 9 minutes among 32 daemons).
        """
        try:
            return await self._run()
        except SecAggError as error:
            # unless the other role's ABORT is what ended it: that one reached everyone
            if self.me in (self.aggregator, self.decryptor) and not self.inbox.role_aborted:
                role = "aggregator" if self.me == self.aggregator else "decryptor"
                code = (ABORT_NOT_ENOUGH_SURVIVORS if isinstance(error, NotEnoughSurvivorsError)
                        else ABORT_OTHER)
                await self._abort(f"the {role} gave up: {error}", code)
            raise
        finally:
            if self._spool is not None:
                self._spool.close()

    async def _run(self) -> tuple[np.ndarray, float, tuple[str, ...], tuple[str, ...]]:
        await self._context_step()
        self._lap("context")
        await self._keys_step()
        self._lap("keys")
        mask_set = await self._shares_step()
        self._lap("shares")
        if self.me == self.aggregator:
            survivors_bytes = await self._aggregate(mask_set)
        elif self.me == self.decryptor:
            self.own_masked = await self._own_masked(mask_set)
            self._lap("encrypt")
            # D "uploaded" by definition: its contribution never leaves D
            survivors_bytes = await self._receive_survivors(mask_set, uploaded=True)
        else:
            sent = await self._stream_upload(mask_set)
            self._lap("encrypt")
            survivors_bytes = await self._receive_survivors(mask_set, uploaded=sent)
        self._lap("aggregate")
        survivors = SurvivorsPayload.decode(survivors_bytes)
        digest = hashlib.sha256(survivors_bytes).digest()
        await self._confirm(survivors, digest)
        if self.me == self.aggregator:
            # the sum goes to D only once A has confirmed the survivor set: D decrypts each
            # chunk as it arrives instead of holding the whole sum through CONFIRM
            await self._stream_sum(survivors, digest)
        self._lap("confirm")
        revealed = self.vault.reveal(survivors.survivors, survivors.dropped)
        unmask = UnmaskPayload(digest, revealed)
        if self.me == self.decryptor:
            try:
                result = await self._decrypt(survivors, digest, unmask)
            except SecAggError as error:
                if not isinstance(error, RoundAbortedError):  # those were announced already
                    # a bad SUM or bad shares: say so now, or every other member waits
                    # 3 step timeouts for a RESULT and the group drifts a round apart
                    await self._abort(f"the decryptor could not finish: {error}", ABORT_OTHER)
                raise
        else:
            await self._send(self.decryptor, Step.UNMASK, unmask.encode())
            result = await self._receive_result(survivors)
        self._lap("unmask_result")
        self.timings["total_s"] = time.monotonic() - self._start
        self._charge("inbox", self.inbox.cpu_s)
        return result.average, result.total_weight, result.survivors, result.dropped

    async def _context_step(self) -> None:
        params = self.params
        if self.me == self.decryptor:
            keys = await self._in_pool(create_context, params)
            self._charge("context_job", keys.cpu_s)
            self.secret_context = keys.secret_context
            self.public_context = keys.public_context
            payload = ContextPayload(
                params.poly_modulus_degree,
                keys.plain_modulus,
                params.coeff_mod_bit_sizes,
                keys.public_context,
            ).encode()
            self.context_hash = hashlib.sha256(payload).digest()
            self.inbox.set_context(self.context_hash)
            await self._broadcast(self.spec.members, Step.CONTEXT, payload)
            return
        # One step's wait, not ROLE_WAIT_FACTOR: the context is D's first act, it waits on
        # no one. Among 32 daemons a decryptor that never joined its session (it had
        # given up on the group's final) held its group 4.5 minutes at three steps.
        message = await self.inbox.next((Step.CONTEXT,), (self.decryptor,), self._deadline())
        if message is None:
            raise RoleUnavailableError(
                f"decryptor {self.decryptor!r} published no context{self._left(self.decryptor)}"
            )
        context = ContextPayload.decode(message.payload)
        expected_p = batching_plain_modulus(params.poly_modulus_degree, params.plain_modulus_bits)
        _refuse_other_protocol(context, params)
        if (
            context.poly_modulus_degree != params.poly_modulus_degree
            or context.plain_modulus != expected_p
            or context.coeff_mod_bit_sizes != params.coeff_mod_bit_sizes
        ):
            raise ContextMismatchError("decryptor's context uses other BFV parameters")
        self._local_cpu(lambda: load_public_context(context.context))
        self.public_context = context.context
        self.context_hash = hashlib.sha256(message.payload).digest()
        self.inbox.set_context(self.context_hash)

    async def _keys_step(self) -> None:
        self._share_key = nacl.public.PrivateKey.generate()
        self._mask_key = nacl.public.PrivateKey.generate()
        self._seed = secrets.token_bytes(32)
        mine = KeysPayload(
            bytes(self._share_key.public_key),
            bytes(self._mask_key.public_key),
            self_mask_commitment(self._seed, self._mask_binding()),
            self.n_values,
            weight_class(self.weight, self.params) if self.params.packed else None,
            self._published_range_shift() if self.params.packed else None,
        )
        self.keys[self.me] = mine
        await self._broadcast(self.spec.members, Step.KEYS, mine.encode())
        others = [p for p in self.spec.members if p != self.me]
        other_lengths = 0
        for sender, message in (
            await self.inbox.gather(Step.KEYS, others, self._deadline())
        ).items():
            try:
                theirs = _decode_keys(message.payload, self.params, sender)
                if theirs.n_values != self.n_values:
                    other_lengths += 1
                    raise VectorShapeError(
                        f"{sender!r} has {theirs.n_values - 1} parameters, we have "
                        f"{self.n_values - 1}"
                    )
                _check_x25519(theirs, sender)
            except SecAggError as error:
                self.inbox.rejected.append(error)
                continue
            self.keys[sender] = theirs
        if len(self.keys) < self.t:
            short = f"only {len(self.keys)} members sent keys, need {self.t}"
            if other_lengths:
                raise MismatchedLengthsError(
                    f"{short}; {other_lengths} sent keys for another vector length")
            raise NotEnoughSurvivorsError(short)

    def _index(self, peer: str) -> int:
        return self.spec.members.index(peer) + 1

    async def _shares_step(self) -> tuple[str, ...]:
        mask_shares, seed_shares = self._local_cpu(
            lambda: (
                split_secret(bytes(self._mask_key), self.k, self.t),
                split_secret(self._seed, self.k, self.t),
            )
        )
        peers = [p for p in self.keys if p != self.me]
        own_index = self._index(self.me) - 1
        self.vault.store(self.me, ShareBundle(mask_shares[own_index], seed_shares[own_index]))

        async def send_bundle(peer: str) -> None:
            i = self._index(peer) - 1
            box = nacl.public.Box(
                self._share_key, nacl.public.PublicKey(self.keys[peer].share_public_key)
            )
            sealed = box.encrypt(ShareBundle(mask_shares[i], seed_shares[i]).encode())
            await self._send(peer, Step.SHARES, bytes(sealed))

        await asyncio.gather(*(send_bundle(p) for p in peers))
        received = await self.inbox.gather(Step.SHARES, peers, self._deadline())
        for sender, message in received.items():
            try:
                box = nacl.public.Box(
                    self._share_key, nacl.public.PublicKey(self.keys[sender].share_public_key)
                )
                bundle = ShareBundle.decode(box.decrypt(bytes(message.payload)))
            except nacl.exceptions.CryptoError:
                self.inbox.rejected.append(
                    ProtocolViolationError(f"undecryptable shares from {sender!r}")
                )
                continue
            except MessageFormatError as error:
                self.inbox.rejected.append(error)
                continue
            mine = self._index(self.me)
            if bundle.mask_key_share.x != mine or bundle.seed_share.x != mine:
                self.inbox.rejected.append(
                    ProtocolViolationError(f"{sender!r} sent shares for another index")
                )
                continue
            self.vault.store(sender, bundle)
        mask_set = tuple(sorted(self.vault.owners))
        if self.params.packed:
            self.weight_class = max(self.keys[p].weight_class or 0 for p in mask_set)
            self.range_shift = min(self.keys[p].range_shift or 0 for p in mask_set)
        if len(mask_set) < self.t:
            raise NotEnoughSurvivorsError(
                f"only {len(mask_set)} members shared keys, need {self.t}"
            )
        if len(mask_set) < self.floor:
            raise TooFewContributorsError(
                f"only {len(mask_set)} members shared keys; a sum needs {self.floor} "
                "contributors before anything is revealed"
            )
        return mask_set

    def _contribution_job(self, mask_set: tuple[str, ...]) -> EncryptJob:
        """The worker job that clips, quantises and masks this member's update."""
        binding = self._mask_key_binding()

        def mask_keys() -> tuple[tuple[bytes, int], ...]:
            masks = [(derive_mask_key(self._seed, binding, b"self"), 1)]
            for peer in mask_set:
                if peer != self.me:
                    secret = pairwise_secret(bytes(self._mask_key), self.keys[peer].mask_public_key)
                    masks.append(
                        (derive_mask_key(secret, binding, b"pair"), pairwise_sign(self.me, peer))
                    )
            return tuple(masks)

        return self._local_cpu(
            lambda: EncryptJob(
                self.public_context,
                # half the bytes of float64 to pickle; no copy when already float32.
                # Group-level DP keeps float64: the clip holds for anchor + delta exactly
                np.asarray(
                    self.flat,
                    dtype=np.float32 if self.params.group_noise is None else np.float64,
                ),
                self.weight,
                self.params,
                self.k,
                mask_keys(),
                self.weight_class,
                self.range_shift,
            )
        )

    async def _own_masked(self, mask_set: tuple[str, ...]) -> np.ndarray:
        """D's masked vector, made in segments (he.segment_jobs) into one int64 array."""
        job = self._contribution_job(mask_set)
        values = np.empty(self.n_slots, dtype=np.int64)
        filled = 0
        for segment in self._local_cpu(lambda: segment_jobs(job)):
            masked = await self._in_pool(mask_contribution, segment)
            self._charge("mask_job", masked.cpu_s)
            values[filled : filled + masked.values.size] = masked.values
            filled += masked.values.size
            del masked
        if filled != self.n_slots:
            raise VectorShapeError(f"masked {filled} slots, expected {self.n_slots}")
        return values

    async def _encrypted_segments(
        self, mask_set: tuple[str, ...]
    ) -> AsyncGenerator[list[bytes], None]:
        """This member's ciphertexts, one segment job (he.segment_jobs) at a time.

        The next segment is encrypting in the worker while the caller sends this one.
        """
        job = self._contribution_job(mask_set)
        segments = self._local_cpu(lambda: segment_jobs(job))
        loop = asyncio.get_running_loop()
        pending = loop.run_in_executor(self.executor, encrypt_contribution, segments[0])
        n_values = 0
        try:
            for index in range(len(segments)):
                output: EncryptOutput = await pending
                if index + 1 < len(segments):
                    pending = loop.run_in_executor(
                        self.executor, encrypt_contribution, segments[index + 1]
                    )
                self._charge("encrypt_job", output.cpu_s)
                n_values += output.n_values
                chunks = output.chunks
                del output
                yield chunks
                del chunks
        finally:
            pending.cancel()
        if n_values != self.n_slots:
            raise VectorShapeError(f"encrypted {n_values} slots, expected {self.n_slots}")

    def _upload_chunk(
        self, mask_set: tuple[str, ...], index: int, ciphertexts: list[bytes]
    ) -> bytearray:
        body = UploadPayload(mask_set, self.n_slots, ciphertexts).encode()
        return add_prefix(index, self.stream_chunks, body)

    async def _upload_chunks(
        self, mask_set: tuple[str, ...]
    ) -> AsyncGenerator[tuple[int, list[bytes]], None]:
        """This member's ciphertexts cut into UPLOAD chunks (chunks.py), one at a time.

        Holds at most one chunk and one segment of ciphertexts, never the whole upload.
        """
        per_chunk = self.params.stream_chunk_ciphertexts
        pending: list[bytes] = []
        index = 0
        async with contextlib.aclosing(self._encrypted_segments(mask_set)) as segments:
            async for ciphertexts in segments:
                pending.extend(ciphertexts)
                del ciphertexts
                while len(pending) >= per_chunk and index < self.stream_chunks - 1:
                    chunk = pending[:per_chunk]
                    del pending[:per_chunk]
                    yield index, chunk
                    del chunk
                    index += 1
        if index != self.stream_chunks - 1 or len(pending) != chunk_ciphertexts(
            index, self.n_slots, self.params.slot_count, per_chunk
        ):
            raise VectorShapeError(f"{len(pending)} ciphertexts left for the last chunk {index}")
        yield index, pending

    async def _stream_upload(self, mask_set: tuple[str, ...]) -> bool:
        """UPLOAD as signed chunk messages, each sent once it is full.

        False when the aggregator is unreachable (the member is then not a survivor).
        """
        async with contextlib.aclosing(self._upload_chunks(mask_set)) as chunks:
            async for index, ciphertexts in chunks:
                payload = self._upload_chunk(mask_set, index, ciphertexts)
                del ciphertexts
                if not await self._send(self.aggregator, Step.UPLOAD, payload):
                    return False
                del payload
        return True

    def _spool_directory(self) -> Path:
        return self.spool_dir if self.spool_dir is not None else default_directory()

    async def _aggregate(self, mask_set: tuple[str, ...]) -> bytes:
        """A: spool its own contribution and every upload as it arrives (spool.py), then
        publish the survivor set (D included: D never uploads). No sum is made here:
        _stream_sum makes it from the spool, one SUM chunk at a time.

        Its own contribution is spooled while the uploads arrive, not before: uploads
        that came in meanwhile would wait in the transport, in memory.
        """
        accumulator = self._accumulator = self._local_cpu(
            lambda: CiphertextAccumulator(
                self.public_context, self.n_slots, self.params.slot_count
            )
        )
        spool = self._spool = self._local_cpu(
            lambda: RoundSpool(self._spool_directory(), f"r{self.spec.round}")
        )
        survivors = [self.me]
        if self.decryptor in mask_set:
            survivors.append(self.decryptor)
        waiting = {p for p in mask_set if p not in (self.me, self.decryptor)}
        own = asyncio.create_task(self._spool_own(mask_set, accumulator, spool))
        try:
            await self._collect_uploads(accumulator, spool, mask_set, waiting, survivors, own)
            await own
        except SpoolError as error:
            # A's own trouble (a full disk): say so, or every member waits for a survivor
            # set until its deadline
            await self._abort(f"the aggregator could not spool the uploads: {error}", ABORT_OTHER)
            raise
        finally:
            if not own.done():
                own.cancel()
            await asyncio.gather(own, return_exceptions=True)
        self._charge("accumulate", accumulator.cpu_s)
        if len(survivors) < self.floor:
            await self._abort(f"{len(survivors)} uploads, need {self.floor}")
            kind = TooFewContributorsError if len(survivors) >= self.t else NotEnoughSurvivorsError
            raise kind(f"only {len(survivors)} members uploaded, need {self.floor}")
        survivors_bytes = SurvivorsPayload(tuple(sorted(survivors)), mask_set).encode()
        await self._broadcast(self.spec.members, Step.SURVIVORS, survivors_bytes)
        return survivors_bytes

    async def _spool_own(
        self, mask_set: tuple[str, ...], accumulator: CiphertextAccumulator, spool: RoundSpool
    ) -> None:
        """A's own contribution into the spool, segment by segment (he.segment_jobs): as
        add_plain words (plain_add) where the context is raw-readable, else encrypted and
        spooled like any member's upload (TenSEAL-only parameters)."""
        started = time.monotonic()
        if accumulator.adds_raw:
            job = self._contribution_job(mask_set)
            segments = self._local_cpu(lambda: segment_jobs(job))
            rows = spool.own_rows(accumulator.plain_row_words)
            for segment in segments:
                plain: PlainAddend = await self._in_pool(plain_addend, segment)
                self._charge("plain_job", plain.cpu_s)
                first = segment.offset_slots // self.params.slot_count
                await self._off_loop("spool", functools.partial(rows.write, first, plain.rows))
                del plain
        else:
            async with contextlib.aclosing(self._upload_chunks(mask_set)) as chunks:
                async for index, ciphertexts in chunks:
                    append = functools.partial(spool.append, self.me, index, ciphertexts)
                    await self._off_loop("spool", append)
                    del ciphertexts, append
        self._own_ready = time.monotonic()
        self.timings["encrypt_s"] = self._own_ready - started

    async def _stream_sum(self, survivors: SurvivorsPayload, digest: bytes) -> None:
        """A: the sum to D as signed SUM chunks, each made from the spool when it is sent.

        Chunk i of A's own words and of every survivor's upload is read, added (checked
        word by word again), serialised, sent and dropped before chunk i + 1 is read:
        A holds one chunk per contributor, never an upload or the whole sum.
        """
        accumulator, spool = self._accumulator, self._spool
        self._accumulator = None
        if accumulator is None or spool is None:
            raise ProtocolViolationError("no sum to send")
        raw = accumulator.adds_raw
        uploads = [
            p for p in survivors.survivors if p != self.decryptor and (p != self.me or not raw)
        ]
        per_chunk = self.params.stream_chunk_ciphertexts
        for index in range(self.stream_chunks):
            first = index * per_chunk
            stop = first + chunk_ciphertexts(index, self.n_slots, self.params.slot_count, per_chunk)
            make = functools.partial(
                self._sum_chunk, accumulator, spool, digest, index, first, stop, uploads, raw
            )
            payload = await self._off_loop("sum", make)
            if not await self._send(self.decryptor, Step.SUM, payload):
                break  # D is gone: members find no RESULT (RoleUnavailableError)
            del payload

    def _sum_chunk(
        self,
        accumulator: CiphertextAccumulator,
        spool: RoundSpool,
        digest: bytes,
        index: int,
        first: int,
        stop: int,
        uploads: list[str],
        raw: bool,
    ) -> bytearray:
        """SUM chunk index's payload, made from the spool (runs in a thread)."""
        window = sum_window(accumulator, spool, index, first, stop, uploads, raw)
        body = SumPayload(digest, self.n_slots, window.serialise_range(first, stop)).encode()
        del window
        return add_prefix(index, self.stream_chunks, body)

    async def _collect_uploads(
        self,
        accumulator: CiphertextAccumulator,
        spool: RoundSpool,
        mask_set: tuple[str, ...],
        waiting: set[str],
        survivors: list[str],
        own: asyncio.Task[None],
    ) -> None:
        """A: check UPLOAD chunks as they arrive and spool them; a member whose last chunk
        is in is a survivor.

        Why spool and not add each chunk at once: a member that stops mid-upload would
        leave its first chunks (its values under its self and pairwise masks) in the sum,
        and nobody can take them out again: D removes masks for the whole vector, as a
        survivor's or as a dropped member's, never for part of it (revealing both would
        unmask its ciphertexts to A and D). So every chunk is checked on arrival (mask
        set, length, ciphertext count for its index, every ciphertext word by word) and
        appended to its sender's spool file; nothing enters the sum before the survivor
        set is fixed (_stream_sum). A member whose stream stops, breaks or fails a check
        is a dropout: its file is deleted and nothing of it is in the sum
        (docs/security.md, "Streamed uploads").

        The deadline runs from when A's own contribution is spooled, as it did when A
        made it before collecting.
        """
        deadline = self._deadline()
        while waiting:
            message = await self.inbox.next((Step.UPLOAD,), waiting, deadline)
            if message is None:
                await own  # raises what stopped it
                if self._own_ready + self.timeout <= deadline:
                    break
                deadline = self._own_ready + self.timeout
                continue
            sender, index = message.sender, message.chunk
            try:
                part = self._checked_upload_chunk(accumulator, mask_set, index, message.payload)
            except SecAggError as error:
                self.inbox.rejected.append(error)
                spool.drop(sender)
                waiting.discard(sender)
                continue
            finally:
                del message
            # a SpoolError (full disk) is A's, not the sender's: it ends the round
            append = functools.partial(spool.append, sender, index, part.chunks)
            await self._off_loop("spool", append)
            del part, append  # the chunk's views: the message is freed before the next
            if index + 1 == self.stream_chunks:
                waiting.discard(sender)
                survivors.append(sender)
            if own.done() and not own.cancelled() and own.exception() is not None:
                break  # A cannot finish: the await in _aggregate raises it
        for sender in waiting:  # stopped mid-upload: nothing of it stays
            spool.drop(sender)

    def _checked_upload_chunk(
        self,
        accumulator: CiphertextAccumulator,
        mask_set: tuple[str, ...],
        index: int,
        payload: bytes | memoryview,
    ) -> UploadPayload:
        """One UPLOAD chunk as A spools it: every check the sum would make, made now."""
        per_chunk = self.params.stream_chunk_ciphertexts
        part = UploadPayload.decode_chunk(
            payload, chunk_ciphertexts(index, self.n_slots, self.params.slot_count, per_chunk)
        )
        if part.mask_set != mask_set:
            raise SurvivorSetMismatchError(
                f"{part.mask_set} masked with another set than {mask_set}"
            )
        if part.n_values != self.n_slots:
            raise VectorShapeError(f"upload has {part.n_values} slots, not {self.n_slots}")
        accumulator.check(part.chunks, index * per_chunk)
        return part

    async def _receive_survivors(self, mask_set: tuple[str, ...], uploaded: bool) -> bytes:
        message = await self.inbox.next(
            (Step.SURVIVORS, Step.ABORT), (self.aggregator,), self._deadline(ROLE_WAIT_FACTOR)
        )
        if message is None:
            raise RoleUnavailableError(
                f"aggregator {self.aggregator!r} sent no survivor set"
                f"{self._left(self.aggregator)}"
            )
        if message.step is Step.ABORT:
            raise abort_error(message.payload)
        survivors = SurvivorsPayload.decode(message.payload)
        if self.me in survivors.survivors:
            if not uploaded:
                raise SurvivorSetMismatchError("listed as survivor but my upload was not sent")
            if survivors.mask_set != mask_set:
                raise SurvivorSetMismatchError("survivor set names another mask set than mine")
        if self.decryptor in survivors.mask_set and self.decryptor not in survivors.survivors:
            raise SurvivorSetMismatchError("aggregator left out the decryptor, who never uploads")
        if len(survivors.survivors) < self.t:
            raise SurvivorSetMismatchError("aggregator listed fewer than t survivors")
        if len(survivors.survivors) < self.floor:
            raise TooFewContributorsError(
                f"aggregator listed {len(survivors.survivors)} contributors; "
                f"{self.floor} are needed before any unmask share is sent"
            )
        if not set(survivors.mask_set) <= set(self.spec.members):
            raise SurvivorSetMismatchError("survivor set names peers outside the group")
        return bytes(message.payload)

    async def _confirm(self, survivors: SurvivorsPayload, digest: bytes) -> None:
        """The consistency check: nothing is revealed unless our view cannot be split.

        Every member signs and sends the digest of the survivor set it saw to the whole
        mask set, then reads every CONFIRM that arrives: one naming another digest
        aborts (``SurvivorSetMismatchError``). Before revealing, it needs (a) every
        survivor's confirmation, or at least ``floor`` of them by the deadline, and (b)
        a *witness quorum*: more than half of the mask set other than A and D confirm
        its digest. A and D sign whatever suits them, so they never count as witnesses;
        an honest witness confirms one view only, so two disjoint views cannot both
        reach a quorum and no member's seed and mask key are ever both revealed
        (issue #19, attack 3; Bonawitz et al. 2017, with the malicious-setting check).
        """
        await self._broadcast(survivors.mask_set, Step.CONFIRM, DigestPayload(digest).encode())
        witnesses = {p for p in survivors.mask_set if p not in (self.aggregator, self.decryptor)}
        quorum = len(witnesses) // 2 + 1
        agreeing = {self.me} if self.me in survivors.survivors else set()
        witnessed = {self.me} & witnesses
        waiting_for = {p for p in survivors.survivors if p != self.me}
        unread = {p for p in survivors.mask_set if p != self.me}
        deadline = self._deadline()
        while unread and (waiting_for or len(witnessed) < quorum):
            message = await self.inbox.next((Step.CONFIRM,), unread, deadline)
            if message is None:
                break
            self._check_confirmation(message.sender, message.payload, digest)
            unread.discard(message.sender)
            waiting_for.discard(message.sender)
            if message.sender in survivors.survivors:
                agreeing.add(message.sender)
            if message.sender in witnesses:
                witnessed.add(message.sender)
        for sender in list(unread):  # confirmations already here count against a split too
            early = self.inbox.take(Step.CONFIRM, sender)
            if early is not None:
                self._check_confirmation(sender, early.payload, digest)
        if len(agreeing) < self.floor:
            kind = TooFewContributorsError if len(agreeing) >= self.t else NotEnoughSurvivorsError
            raise kind(f"only {len(agreeing)} survivors confirmed, need {self.floor}")
        if len(witnessed) < quorum:
            raise NotEnoughSurvivorsError(
                f"only {len(witnessed)} of {len(witnesses)} members other than the aggregator "
                f"and the decryptor confirmed the survivor set, need {quorum}"
            )

    @staticmethod
    def _check_confirmation(sender: str, payload: bytes, digest: bytes) -> None:
        if DigestPayload.decode(payload).digest != digest:
            raise SurvivorSetMismatchError(f"{sender!r} saw another survivor set")

    async def _decrypt(
        self, survivors: SurvivorsPayload, digest: bytes, own: UnmaskPayload
    ) -> ResultPayload:
        """D: gather the sum and t unmask messages, reconstruct, decrypt, publish."""
        masked = await self._receive_sum(survivors, digest)
        answers: list[UnmaskPayload] = [own]
        waiting = {p for p in survivors.mask_set if p != self.me}
        deadline = self._deadline()
        while waiting and len(answers) < self.t:
            reply = await self.inbox.next((Step.UNMASK,), waiting, deadline)
            if reply is None:
                break
            waiting.discard(reply.sender)
            try:
                unmask = UnmaskPayload.decode(reply.payload)
                if unmask.survivors_digest != digest:
                    raise SurvivorSetMismatchError(
                        f"{reply.sender!r} answered another survivor set"
                    )
            except SecAggError as error:
                self.inbox.rejected.append(error)
                continue
            answers.append(unmask)
        if len(answers) < self.t:
            await self._abort(f"{len(answers)} unmask answers, need {self.t}")
            raise NotEnoughSurvivorsError(
                f"only {len(answers)} members helped unmask, need {self.t}"
            )
        if len(survivors.survivors) < self.floor:  # checked on receipt; never decrypt
            raise TooFewContributorsError(
                f"{len(survivors.survivors)} contributors in the sum, need {self.floor}"
            )
        unknown = set(survivors.mask_set) - set(self.keys)
        if unknown:
            raise SurvivorSetMismatchError(
                f"mask set names {len(unknown)} peer(s) whose keys we never received"
            )
        masks = self._local_cpu(lambda: self._masks_to_remove(survivors, answers))
        try:
            return await self._publish_result(survivors, masked, masks)
        except (ValueError, RuntimeError, TypeError, OverflowError) as exc:
            # the sum is A's bytes: whatever numpy makes of them, the round ends here as a
            # protocol error, never as a crash of D's daemon
            raise CiphertextLayoutError(f"the aggregator's sum does not decode: {exc}") from exc

    async def _receive_sum(self, survivors: SurvivorsPayload, digest: bytes) -> np.ndarray:
        """D: decrypt each SUM chunk as it arrives into its own masked vector, mod p.

        D's own masked vector (int64, held anyway) becomes the masked sum in place; no
        SUM chunk outlives its decryption (stream_decrypt.py says why this order).
        """
        own = self.own_masked if self.me in survivors.survivors else None
        self.own_masked = None
        masked = own if own is not None else np.zeros(self.n_slots, dtype=np.int64)
        del own
        p = self.grid().plain_modulus
        per_chunk = self.params.stream_chunk_ciphertexts
        deadline = self._deadline(ROLE_WAIT_FACTOR)
        for index in range(self.stream_chunks):
            message = await self.inbox.next((Step.SUM,), (self.aggregator,), deadline)
            if message is None:
                raise RoleUnavailableError(
                    f"aggregator {self.aggregator!r} sent {index} of {self.stream_chunks} "
                    f"sum chunks{self._left(self.aggregator)}"
                )
            # the inbox hands chunks over in order, each index once (chunks.py)
            part = SumPayload.decode_chunk(
                message.payload,
                chunk_ciphertexts(index, self.n_slots, self.params.slot_count, per_chunk),
            )
            del message
            if part.survivors_digest != digest:
                raise SurvivorSetMismatchError("the sum is bound to another survivor set")
            if part.n_values != self.n_slots:
                raise VectorShapeError(f"sum has {part.n_values} slots, not {self.n_slots}")
            start, stop = chunk_slots(index, self.n_slots, self.params.slot_count, per_chunk)
            job = SumChunkJob(self.secret_context, [bytes(c) for c in part.chunks], stop - start, p)
            del part
            output: SumChunkOutput = await self._in_pool(decrypt_sum_chunk, job)
            self._charge("decrypt_job", output.cpu_s)
            cpu = time.thread_time()
            add_own_mod_p(masked[start:stop], output.values, p)  # in place: a view
            self._charge("loop", time.thread_time() - cpu)
            del job, output
            deadline = max(deadline, self._deadline())
        return masked

    async def _publish_result(
        self,
        survivors: SurvivorsPayload,
        masked: np.ndarray,
        masks: tuple[tuple[bytes, int], ...],
    ) -> ResultPayload:
        """D: unmask segment by segment (the weight slot's first) and send each as a
        RESULT chunk in index order, as soon as the total weight is known."""
        per_chunk = self.params.stream_chunk_ciphertexts
        fields = self.params.fields_per_slot
        n_params = self.flat.size
        last = self.stream_chunks - 1

        def job(index: int, weight_units: int | None) -> UnmaskJob:
            start, stop = chunk_slots(index, self.n_slots, self.params.slot_count, per_chunk)
            return UnmaskJob(
                masked[start:stop],
                start,
                self.params,
                self.k,
                masks,
                self.weight_class,
                self.range_shift,
                result_chunk_values(
                    index, n_params, self.n_slots, self.params.slot_count, per_chunk, fields
                ),
                weight_units,
            )

        average = np.empty(n_params, dtype=np.float32)
        tail: UnmaskOutput = await self._in_pool(unmask_segment, job(last, None))
        self._charge("decrypt_job", tail.cpu_s)
        total_weight, units = tail.total_weight, tail.weight_units
        average[last * per_chunk * self.params.slot_count * fields :] = tail.average

        async def publish(index: int, values: np.ndarray) -> None:
            body = ResultPayload(survivors.survivors, survivors.dropped, total_weight, values)
            payload = add_prefix(index, self.stream_chunks, body.encode())
            await self._broadcast(self.spec.members, Step.RESULT, bytes(payload))

        for index in range(last):
            output: UnmaskOutput = await self._in_pool(unmask_segment, job(index, units))
            self._charge("decrypt_job", output.cpu_s)
            offset = index * per_chunk * self.params.slot_count * fields
            average[offset : offset + output.average.size] = output.average
            await publish(index, output.average)
            del output
        await publish(last, tail.average)
        return ResultPayload(survivors.survivors, survivors.dropped, total_weight, average)

    def _masks_to_remove(
        self, survivors: SurvivorsPayload, answers: list[UnmaskPayload]
    ) -> tuple[tuple[bytes, int], ...]:
        """Self masks of survivors, and pairwise masks between survivors and dropped peers."""
        collected: dict[tuple[str, int], list[Share]] = {}
        for answer in answers:
            for item in answer.shares:
                collected.setdefault((item.owner, item.kind), []).append(item.share)
        binding = self._mask_key_binding()
        masks: list[tuple[bytes, int]] = []
        for owner in survivors.survivors:
            seed = reconstruct_secret(collected.get((owner, SEED_SHARE), []), self.t)
            commitment = self_mask_commitment(seed, self._mask_binding())
            if commitment != self.keys[owner].seed_commitment:
                raise ProtocolViolationError(
                    f"reconstructed seed of {owner!r} fails its commitment"
                )
            masks.append((derive_mask_key(seed, binding, b"self"), 1))
        for gone in survivors.dropped:
            private = reconstruct_secret(collected.get((gone, MASK_KEY_SHARE), []), self.t)
            if public_key_of(private) != self.keys[gone].mask_public_key:
                raise ProtocolViolationError(f"reconstructed mask key of {gone!r} is wrong")
            for owner in survivors.survivors:
                secret = pairwise_secret(private, self.keys[owner].mask_public_key)
                masks.append(
                    (derive_mask_key(secret, binding, b"pair"), pairwise_sign(owner, gone))
                )
        return tuple(masks)

    async def _receive_result(self, survivors: SurvivorsPayload) -> ResultPayload:
        """Apply D's RESULT chunks as they arrive; all must name the same survivors and
        total weight, and each carry exactly the values its index fixes."""
        per_chunk = self.params.stream_chunk_ciphertexts
        fields = self.params.fields_per_slot
        average = np.empty(self.flat.size, dtype=np.float32)
        total_weight: float | None = None
        deadline = self._deadline(ROLE_WAIT_FACTOR)
        for index in range(self.stream_chunks):
            message = await self.inbox.next((Step.RESULT, Step.ABORT), (self.decryptor,), deadline)
            if message is None:
                raise RoleUnavailableError(
                    f"decryptor {self.decryptor!r} published {index} of {self.stream_chunks} "
                    f"result chunks{self._left(self.decryptor)}"
                )
            if message.step is Step.ABORT:
                raise abort_error(message.payload)
            want = result_chunk_values(
                index, self.flat.size, self.n_slots, self.params.slot_count, per_chunk, fields
            )
            part = ResultPayload.decode_chunk(message.payload, want)
            if part.survivors != survivors.survivors or part.dropped != survivors.dropped:
                raise SurvivorSetMismatchError("the result covers another survivor set")
            if total_weight is None:
                total_weight = part.total_weight
            elif part.total_weight != total_weight:
                raise ProtocolViolationError("result chunks name different total weights")
            offset = index * per_chunk * self.params.slot_count * fields
            average[offset : offset + want] = part.average
            del part, message
            deadline = max(deadline, self._deadline())
        assert total_weight is not None  # at least one chunk
        return ResultPayload(survivors.survivors, survivors.dropped, total_weight, average)


def _refuse_other_protocol(context: ContextPayload, params: SecAggParams) -> None:
    """Name the protocol a decryptor of another version runs, instead of 'other parameters'."""
    for other in (SecAggParams(), SecAggParams.v3()):
        if other.protocol == params.protocol:
            continue
        other_p = batching_plain_modulus(other.poly_modulus_degree, other.plain_modulus_bits)
        if context.plain_modulus == other_p:
            raise ContextMismatchError(
                f"the decryptor runs {other.protocol} ({other.plain_modulus_bits}-bit plain "
                f"modulus); this member runs {params.protocol}: every member of a group "
                f"must set [federation] secure_aggregation = \"{params.protocol}\""
            )


def _decode_keys(payload: bytes | memoryview, params: SecAggParams, sender: str) -> KeysPayload:
    """KEYS of this protocol version, with a weight class in range for v3."""
    try:
        keys = KeysPayload.decode(payload, packed=params.packed)
    except MessageFormatError as exc:
        raise MessageFormatError(
            f"{sender!r} sent keys that {params.protocol} cannot read (another protocol "
            f"version?): {exc}"
        ) from exc
    if keys.weight_class is not None and keys.weight_class > max_weight_class(params):
        raise ProtocolViolationError(
            f"{sender!r} claims weight class {keys.weight_class}, above max_weight's "
            f"{max_weight_class(params)}"
        )
    if keys.range_shift is not None and keys.range_shift > MAX_RANGE_SHIFT:
        raise ProtocolViolationError(
            f"{sender!r} claims range shift {keys.range_shift}, above {MAX_RANGE_SHIFT}"
        )
    return keys


def _check_x25519(keys: KeysPayload, sender: str) -> None:
    """Refuse public keys X25519 cannot use (low-order points make libsodium fail later)."""
    probe = bytes(nacl.public.PrivateKey.generate())
    try:
        pairwise_secret(probe, keys.share_public_key)
        pairwise_secret(probe, keys.mask_public_key)
    except nacl.exceptions.CryptoError as exc:
        raise ProtocolViolationError(f"{sender!r} published an unusable X25519 key") from exc
