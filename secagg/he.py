"""BFV work (TenSEAL) that runs in worker processes.

Why processes: TenSEAL never releases the GIL, so encrypting a 4 M-value update in a
thread would freeze the daemon's event loop and its libp2p thread for seconds.  Every
function here is a picklable top-level function taking a frozen job dataclass, and
returns its own CPU time so the caller can account for it.  Workers silence file
descriptor 1 because TenSEAL's C++ code prints warnings straight to stdout; the parent
process's stdout is never touched.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import multiprocessing
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import tenseal as ts
from fedswarm.secagg.errors import (
    CiphertextLayoutError,
    ContextMismatchError,
    SecretKeyMissingError,
    VectorShapeError,
)
from fedswarm.secagg.masking import apply_masks
from fedswarm.secagg.modular import reduce_mod
from fedswarm.secagg.params import SecAggParams, batching_plain_modulus
from fedswarm.secagg.quantise import (
    QuantisationGrid,
    encode_contribution,
    l2_norm,
)

_stdout_silenced = False


def silence_native_stdout() -> None:
    """Point fd 1 at /dev/null, but only inside a worker process, once."""
    global _stdout_silenced
    if _stdout_silenced or multiprocessing.parent_process() is None:
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    _stdout_silenced = True


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to kill this worker when the process that started it dies.

    A daemon killed with SIGKILL cannot shut its pool down, and a spawned worker
    blocked on its task queue would otherwise sleep forever (about 85 MB each, one
    more per crash). Elsewhere than Linux this is a no-op.
    """
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os._exit(1)  # the parent died before the request above took effect


def _init_worker() -> None:
    die_with_parent()
    silence_native_stdout()


def make_executor(max_workers: int = 1) -> concurrent.futures.ProcessPoolExecutor:
    """A process pool for HE work, started with 'spawn' (never fork a libp2p/trio process).

    Workers write nothing to stdout (TenSEAL warns there) and die with their parent.
    """
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=max_workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
    )


def context_hash(context_payload: bytes) -> bytes:
    """The hash every message of the round binds (sha256 of D's context payload)."""
    return hashlib.sha256(context_payload).digest()


@dataclass(frozen=True)
class ContextKeys:
    public_context: bytes
    secret_context: bytes
    plain_modulus: int
    cpu_s: float


def create_context(params: SecAggParams) -> ContextKeys:
    """A fresh BFV key pair; the public serialisation carries no secret/relin/galois keys."""
    silence_native_stdout()
    start = time.process_time()
    params.validate()
    plain_modulus = batching_plain_modulus(params.poly_modulus_degree, params.plain_modulus_bits)
    context = ts.context(
        ts.SCHEME_TYPE.BFV,
        poly_modulus_degree=params.poly_modulus_degree,
        plain_modulus=plain_modulus,
        coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
        n_threads=1,
    )
    public = context.serialize(
        save_public_key=True,
        save_secret_key=False,
        save_relin_keys=False,
        save_galois_keys=False,
    )
    secret = context.serialize(
        save_public_key=True,
        save_secret_key=True,
        save_relin_keys=False,
        save_galois_keys=False,
    )
    return ContextKeys(public, secret, plain_modulus, time.process_time() - start)


CONTEXT_CACHE_SIZE = 4
_context_cache: OrderedDict[bytes, ts.Context] = OrderedDict()


def load_public_context(public_context: bytes) -> ts.Context:
    """Deserialise a context and refuse one that carries a secret key.

    Loaded contexts are kept per process (a few, keyed by sha256), so a worker that
    encrypts or adds several times in one round loads D's context once.  A public
    context is never mutated by encrypting or adding under it.
    """
    key = hashlib.sha256(public_context).digest()
    cached = _context_cache.get(key)
    if cached is not None:
        _context_cache.move_to_end(key)
        return cached
    try:
        context = ts.context_from(public_context, n_threads=1)
    except Exception as exc:  # TenSEAL raises bare ValueError/RuntimeError on garbage
        raise ContextMismatchError(f"cannot load BFV context: {exc}") from exc
    if context.is_private():
        raise ContextMismatchError("published context contains a secret key")
    _context_cache[key] = context
    while len(_context_cache) > CONTEXT_CACHE_SIZE:
        _context_cache.popitem(last=False)
    return context


def encrypt_vector(context: ts.Context, values: np.ndarray, slot_count: int) -> list[bytes]:
    """Encrypt values (ints in [0, p)) as ceil(n / slots) serialised BFV ciphertexts.

    Each chunk goes to TenSEAL as an int64 numpy slice through plain_tensor: building a
    Python list of 4096 ints per chunk and converting it back cost as much as a third of
    the encryption itself.
    """
    if values.dtype != np.int64:
        values = values.astype(np.int64)
    out = []
    for start in range(0, values.size, slot_count):
        plain = ts.plain_tensor(values[start : start + slot_count], dtype="int")
        out.append(ts.bfv_vector(context, plain).serialize())
    return out


@dataclass(frozen=True)
class EncryptJob:
    """Everything a worker needs to turn an update into a masked ciphertext upload."""

    public_context: bytes
    update: np.ndarray
    weight: float
    params: SecAggParams
    group_size: int
    masks: tuple[tuple[bytes, int], ...]  # (derived key, +1/-1): pairwise and self masks
    weight_class: int | None = None  # v3: the group's largest weight class (KEYS)
    range_shift: int = 0  # v3: the group's smallest range shift (KEYS)
    # a segment of a larger update (segment_jobs): where its slots start, whether it
    # ends with the weight slot, and the whole update's L2 norm
    offset_slots: int = 0
    weight_slot: bool = True
    norm: float | None = None

    def grid(self) -> QuantisationGrid:
        return QuantisationGrid.for_group(
            self.params, self.group_size, self.weight_class, self.range_shift
        )


@dataclass(frozen=True)
class EncryptOutput:
    chunks: list[bytes]
    n_values: int
    cpu_s: float


def masked_contribution(job: EncryptJob) -> np.ndarray:
    """Quantised contribution plus all masks, mod p (what A and D could at most see)."""
    grid = job.grid()
    rng = np.random.default_rng(int.from_bytes(secrets.token_bytes(16), "big"))
    values = encode_contribution(
        job.update, job.weight, job.params, grid, rng, norm=job.norm, weight_slot=job.weight_slot
    )
    apply_masks(values, list(job.masks), grid.plain_modulus, offset_words=job.offset_slots)
    return values


SEGMENT_CIPHERTEXTS = 128
"""Ciphertexts per encryption job: 1.6 M values on v3 (8 MB of upload), 0.5 M on v2."""


def segment_jobs(job: EncryptJob, ciphertexts: int = SEGMENT_CIPHERTEXTS) -> list[EncryptJob]:
    """Split one member's encryption into jobs of a fixed number of whole ciphertexts.

    Why: one job for the whole update pickled it into the worker and its chunks back in
    one piece; at 80 M values that was 320 MB out and 427 MB back, on top of what both
    processes already held.  Each segment covers whole ciphertexts, masks with its slice
    of every keystream and is quantised with the whole update's L2 norm, so the chunks
    are exactly those of one job.  Only the last segment carries the weight slot.
    """
    flat = np.asarray(job.update).reshape(-1)
    values_per_job = ciphertexts * job.params.slot_count * job.params.fields_per_slot
    if flat.size <= values_per_job:
        return [job]
    norm = l2_norm(flat) if job.params.clip_mode == "l2" else None
    jobs = []
    for start in range(0, flat.size, values_per_job):
        stop = min(start + values_per_job, flat.size)
        jobs.append(
            dataclasses.replace(
                job,
                update=flat[start:stop],
                offset_slots=start // job.params.fields_per_slot,
                weight_slot=stop == flat.size,
                norm=norm,
            )
        )
    return jobs


@dataclass(frozen=True)
class MaskOutput:
    values: np.ndarray  # int64 in [0, p): the masked quantised vector, never encrypted
    cpu_s: float


def mask_contribution(job: EncryptJob) -> MaskOutput:
    """D's contribution: clip, quantise and mask, but do not encrypt (runs in a worker).

    D never uploads: it keeps this vector and adds it to the decrypted sum itself
    (stream_decrypt: the SUM is decrypted into it), so encrypting it would protect nothing.
    """
    silence_native_stdout()
    start = time.process_time()
    values = masked_contribution(job)
    return MaskOutput(values, time.process_time() - start)


def encrypt_contribution(job: EncryptJob) -> EncryptOutput:
    """Clip, quantise, mask and encrypt one member's update (runs in a worker)."""
    silence_native_stdout()
    start = time.process_time()
    values = masked_contribution(job)
    context = load_public_context(job.public_context)
    chunks = encrypt_vector(context, values, job.params.slot_count)
    return EncryptOutput(chunks, values.size, time.process_time() - start)


def decrypt_chunks(
    secret_context: bytes, chunks: list[bytes], n_values: int, plain_modulus: int
) -> np.ndarray:
    """Decrypt to int64 values in [0, p); refuses a context without a secret key."""
    context = ts.context_from(secret_context, n_threads=1)
    if not context.is_private():
        raise SecretKeyMissingError("this context has no secret key: cannot decrypt")
    values = np.empty(n_values, dtype=np.int64)
    filled = 0
    for index, chunk in enumerate(chunks):
        try:
            plain = ts.bfv_vector_from(context, chunk).decrypt()
        except Exception as exc:  # TenSEAL raises bare ValueError/RuntimeError on garbage
            raise CiphertextLayoutError(
                f"summed ciphertext {index} does not load or decrypt: {exc}"
            ) from exc
        if filled + len(plain) > n_values:
            raise VectorShapeError(f"decrypted more than the expected {n_values} values")
        values[filled : filled + len(plain)] = plain  # numpy converts the list in C
        filled += len(plain)
    if filled != n_values:
        raise VectorShapeError(f"decrypted {filled} values, expected {n_values}")
    reduce_mod(values, plain_modulus, values, np.empty_like(values))  # TenSEAL centres them
    return values


def add_own_mod_p(values: np.ndarray, own: np.ndarray, plain_modulus: int) -> None:
    """values += own mod p in place; both hold int64 words in [0, p), so one subtraction."""
    if own.shape != values.shape:
        raise VectorShapeError(f"own contribution has {own.size} values, not {values.size}")
    np.add(values, own, out=values)
    np.subtract(values, plain_modulus, out=values, where=values >= plain_modulus)
