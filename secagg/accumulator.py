"""A's checks and sums of encrypted uploads, one window of ciphertexts at a time.

A checks every upload chunk as it arrives (``check``: nothing is added yet, the chunk
goes to the spool, spool.py) and later sums one SUM chunk's window of ciphertexts from
the spool (``window``, then ``add`` and ``add_plain``), so neither a whole upload nor a
whole sum is ever in A's memory. A window is a fresh sum sharing the loaded context and
the raw layout; an accumulator made by the constructor covers the whole vector.

Two ways to add, chosen once per round from D's context:

* raw (the default parameters): every chunk of an upload is parsed and checked first
  (layout, level, shape, every coefficient < q_j; see ciphertext_raw), and only then
  added word by word mod q_j into one uint64 matrix.  About 0.05 s per 4 M values,
  against 0.15 s for TenSEAL loads and adds plus 0.2 s to re-compress the sum.
* TenSEAL: for parameters whose ciphertext words zstd can compress (data-level primes
  well under 60 bits), where the raw reader cannot see the coefficients; each chunk is
  loaded and added by TenSEAL as before.

Either way a bad upload is refused with a specific error before anything is added.
CPU is counted per thread: A's loop thread does this work, and process time would also
charge A with what the pool's feeder threads do meanwhile.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import numpy as np
import tenseal as ts
from fedswarm.secagg.ciphertext_raw import CiphertextLayout, CompressedBlockError
from fedswarm.secagg.errors import ContextMismatchError, VectorShapeError
from fedswarm.secagg.he import load_public_context


class CiphertextAccumulator:
    """Sum of uploads under one public context over ciphertexts first..stop-1 of a vector
    (the whole vector unless made by window()); serialise() gives the chunks for D."""

    def __init__(self, public_context: bytes, n_values: int, slot_count: int) -> None:
        self._context = load_public_context(public_context)
        self._n_values = n_values
        self._slot_count = slot_count
        self._n_chunks = -(-n_values // slot_count)
        try:
            self._layout: CiphertextLayout | None = CiphertextLayout.for_context(self._context)
        except CompressedBlockError:
            self._layout = None
        self._first = 0  # the window of ciphertexts this sum covers
        self._stop = self._n_chunks
        self._raw_sum: np.ndarray | None = None  # rows first..stop-1
        self._tenseal_sum: list[ts.BFVVector] | None = None
        self.count = 0  # ciphertext uploads added
        self.plain_count = 0  # plaintext contributions added (A's own)
        self.cpu_s = 0.0

    @property
    def adds_raw(self) -> bool:
        return self._layout is not None

    @property
    def plain_row_words(self) -> int:
        """Words in one add_plain row (c0 of one ciphertext); raw-readable contexts only."""
        if self._layout is None:
            raise ContextMismatchError("plaintext adds need a raw-readable context")
        return self._layout.n_words // 2

    def window(self, first: int, stop: int) -> CiphertextAccumulator:
        """An empty sum of ciphertexts first..stop-1 under the same context: nothing is
        loaded again, so one SUM chunk's sum costs only its own words."""
        if not 0 <= first < stop <= self._n_chunks:
            raise VectorShapeError(f"ciphertexts {first}..{stop} of {self._n_chunks}")
        out = copy.copy(self)  # shares the context and the layout (its checked heads too)
        out._first, out._stop = first, stop
        out._raw_sum, out._tenseal_sum = None, None
        out.count, out.plain_count, out.cpu_s = 0, 0, 0.0
        return out

    def _want(self, i: int) -> int:
        return min(self._slot_count, self._n_values - i * self._slot_count)

    def check(self, chunks: Sequence[bytes | memoryview], first: int) -> None:
        """Refuse ciphertexts first.. of an upload that add() would refuse; add nothing.

        Why: A keeps a member's chunks (spooled) until its upload is complete, and the
        survivor set is published before anything is added. A bad word must be found on
        arrival, while its sender can still be dropped, not while the sum is made.
        """
        start = time.thread_time()
        try:
            if not 0 <= first <= first + len(chunks) <= self._n_chunks:
                raise VectorShapeError(
                    f"ciphertexts {first}..{first + len(chunks)} of {self._n_chunks}"
                )
            if self._layout is not None:
                self._raw_words(self._layout, chunks, first)
            else:
                self._tenseal_vectors(chunks, first)
        finally:
            self.cpu_s += time.thread_time() - start

    def add(self, chunks: Sequence[bytes | memoryview]) -> None:
        """Add one upload's ciphertexts of this window (all of them, checked first)."""
        start = time.thread_time()
        try:
            expected = self._stop - self._first
            if len(chunks) != expected:
                raise VectorShapeError(f"expected {expected} ciphertexts, got {len(chunks)}")
            if self._layout is not None:
                self._add_raw(self._layout, chunks)
            else:
                self._add_tenseal(chunks)
            self.count += 1
        finally:
            self.cpu_s += time.thread_time() - start

    def _raw_words(
        self, layout: CiphertextLayout, chunks: Sequence[bytes | memoryview], first: int
    ) -> list[np.ndarray]:
        words = []
        for i, chunk in enumerate(chunks, start=first):
            size, coefficients = layout.coefficients(chunk)
            if size != self._want(i):
                raise VectorShapeError(f"ciphertext {i} holds {size} values, not {self._want(i)}")
            words.append(coefficients)
        return words

    def _add_raw(self, layout: CiphertextLayout, chunks: Sequence[bytes | memoryview]) -> None:
        words = self._raw_words(layout, chunks, self._first)
        if self._raw_sum is None:
            self._raw_sum = np.stack(words)  # a copy: the views point into the message
            return
        q = layout.modulus_row
        scratch = np.empty_like(q)
        for total, addend in zip(self._raw_sum, words, strict=True):
            np.add(total, addend, out=total)  # < 2 q_j <= 2^61: no wrap
            np.subtract(total, q, out=scratch)  # wraps above 2^63 where total < q_j
            np.minimum(total, scratch, out=total)

    def add_plain(self, rows: np.ndarray, first_chunk: int = 0, last: bool = True) -> None:
        """Add A's own contribution as add_plain words (plain_add): c0 += rows mod q_j.

        Exactly what SEAL's add_plain does to the sum, so the sum decrypts to the same
        plaintext as if A had encrypted and uploaded its masked vector.  Only in raw mode.
        rows may be a segment (chunks first_chunk..first_chunk + len(rows), within the
        window); the contribution counts once its last segment (last=True) is in.
        """
        start = time.thread_time()
        try:
            if self._layout is None:
                raise ContextMismatchError("plaintext adds need a raw-readable context")
            half = self._layout.n_words // 2
            if (
                rows.dtype != np.uint64
                or rows.ndim != 2
                or rows.shape[1] != half
                or not self._first <= first_chunk <= first_chunk + len(rows) <= self._stop
                or (last and first_chunk + len(rows) != self._stop)
            ):
                raise VectorShapeError(
                    f"plain rows are {rows.dtype} {rows.shape} at chunk {first_chunk}, "
                    f"not uint64 rows of {half} words within chunks {self._first}..{self._stop}"
                )
            q = self._layout.modulus_row[:half]
            if self._raw_sum is None:
                # no upload arrived: the sum is A's plaintext under c1 = 0, which D alone
                # reads (the round goes on only if A and D alone reach the threshold)
                rows_held = self._stop - self._first
                self._raw_sum = np.zeros((rows_held, self._layout.n_words), np.uint64)
            scratch = np.empty_like(q)
            offset = first_chunk - self._first
            target = self._raw_sum[offset : offset + len(rows), :half]
            for total, addend in zip(target, rows, strict=True):
                np.add(total, addend, out=total)
                np.subtract(total, q, out=scratch)
                np.minimum(total, scratch, out=total)
            self.plain_count += int(last)
        finally:
            self.cpu_s += time.thread_time() - start

    def _tenseal_vectors(
        self, chunks: Sequence[bytes | memoryview], first: int
    ) -> list[ts.BFVVector]:
        try:
            vectors = [ts.bfv_vector_from(self._context, bytes(c)) for c in chunks]
        except Exception as exc:
            raise ContextMismatchError(
                f"ciphertext does not load under this context: {exc}"
            ) from exc
        for i, vector in enumerate(vectors, start=first):
            if vector.size() != self._want(i):
                raise VectorShapeError(
                    f"ciphertext {i} holds {vector.size()} values, not {self._want(i)}"
                )
        return vectors

    def _add_tenseal(self, chunks: Sequence[bytes | memoryview]) -> None:
        vectors = self._tenseal_vectors(chunks, self._first)
        if self._tenseal_sum is None:
            self._tenseal_sum = vectors
            return
        for total, vector in zip(self._tenseal_sum, vectors, strict=True):
            total.add_(vector)

    def serialise_range(self, first: int, stop: int) -> list[bytes]:
        """Ciphertexts first..stop-1 of the sum (within the window): one SUM chunk's worth."""
        start = time.thread_time()
        try:
            if not self._first <= first <= stop <= self._stop:
                raise VectorShapeError(
                    f"ciphertexts {first}..{stop} outside the sum's {self._first}..{self._stop}"
                )
            at = first - self._first
            if self._layout is not None and self._raw_sum is not None:
                layout = self._layout
                return [
                    layout.encode(self._want(i), self._raw_sum[at + i - first])
                    for i in range(first, stop)
                ]
            if self._tenseal_sum is not None:
                return [v.serialize() for v in self._tenseal_sum[at : at + stop - first]]
            raise VectorShapeError("nothing was added")
        finally:
            self.cpu_s += time.thread_time() - start

    def serialise(self) -> list[bytes]:
        return self.serialise_range(self._first, self._stop)
