"""A's own contribution as the words BFV add_plain adds to a ciphertext, not as a ciphertext.

Why: A's masked vector never leaves A except inside the sum that D decrypts, so
encrypting it protected nothing, and SEAL public-key encryption was about 1.5-2 s of
A's CPU per 4 M values.  BFV's add_plain (SEAL's Evaluator::add_plain) adds
Delta*m = round(q * m / t) mod q_j to the first polynomial c0 of a ciphertext and leaves
c1 alone (m is the batch-encoded plaintext polynomial); the result decrypts to the old
plaintext plus the slots of m, exactly.  A adds those words into its raw sum
(CiphertextAccumulator.add_plain) like any upload.

How the words are obtained: TenSEAL 0.3.18 exposes neither a ciphertext's nor a
plaintext's coefficient buffer, so the worker lets SEAL itself do the add on a fixed
reference ciphertext (an encryption of zeros made once per vector size), serialises the
result, reads its words with ciphertext_raw, checks that c1 did not change, and
subtracts the reference's c0 mod q_j.  What remains is SEAL's own Delta*m, bit for bit,
whatever rounding SEAL uses.  About 0.7-0.9 s per 4 M values (mostly TenSEAL's
plain_tensor conversion and zstd serialisation), against 1.8 s to encrypt.

Only for contexts whose ciphertexts the raw reader understands (the default
parameters); otherwise A encrypts its own contribution and adds it as before.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import tenseal as ts
from fedswarm.secagg.ciphertext_raw import CiphertextLayout
from fedswarm.secagg.errors import CiphertextLayoutError
from fedswarm.secagg.he import (
    EncryptJob,
    load_public_context,
    masked_contribution,
    silence_native_stdout,
)


@dataclass(frozen=True)
class PlainAddend:
    """c0 words to add mod q_j, one row per chunk (moduli x N words, SEAL's order)."""

    rows: np.ndarray  # uint64, shape (chunks, c0 words), every word < its q_j
    n_values: int
    cpu_s: float


def plain_addend(job: EncryptJob) -> PlainAddend:
    """Clip, quantise and mask A's update, then turn it into add_plain words (in a worker)."""
    silence_native_stdout()
    start = time.process_time()
    values = masked_contribution(job)
    context = load_public_context(job.public_context)
    layout = CiphertextLayout.for_context(context)  # CompressedBlockError: not raw-readable
    rows = add_plain_words(context, layout, values, job.params.slot_count)
    return PlainAddend(rows, values.size, time.process_time() - start)


def add_plain_words(
    context: ts.Context, layout: CiphertextLayout, values: np.ndarray, slot_count: int
) -> np.ndarray:
    """For each chunk of values (ints in [0, t)), the c0 words SEAL's add_plain would add."""
    if values.dtype != np.int64:
        values = values.astype(np.int64)
    half = layout.n_words // 2  # a fresh ciphertext has two polynomials: c0, then c1
    q = layout.modulus_row[:half]
    n_chunks = -(-values.size // slot_count)
    rows = np.empty((n_chunks, half), dtype=np.uint64)
    references: dict[int, tuple[bytes, np.ndarray]] = {}
    for i in range(n_chunks):
        piece = values[i * slot_count : (i + 1) * slot_count]
        reference = references.get(piece.size)
        if reference is None:
            reference = _zero_reference(context, layout, piece.size)
            references[piece.size] = reference
        encoded, ref_words = reference
        vector = ts.bfv_vector_from(context, encoded)
        vector.add_(ts.plain_tensor(piece, dtype="int"))
        size, words = layout.coefficients(vector.serialize())
        if size != piece.size or not np.array_equal(words[half:], ref_words[half:]):
            raise CiphertextLayoutError("add_plain changed more than the first polynomial")
        difference = words[:half] + (q - ref_words[:half])  # < 2 q_j: no wrap
        np.minimum(difference, difference - q, out=rows[i])  # the subtraction wraps if < q_j
    return rows


def _zero_reference(
    context: ts.Context, layout: CiphertextLayout, size: int
) -> tuple[bytes, np.ndarray]:
    """An encryption of zeros, uncompressed (cheap for TenSEAL to load), and its words."""
    size_read, words = layout.coefficients(ts.bfv_vector(context, [0] * size).serialize())
    if size_read != size:
        raise CiphertextLayoutError(f"reference holds {size_read} values, not {size}")
    words = words.copy()
    return layout.encode(size, words), words
