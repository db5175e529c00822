"""D's side of a streamed SUM: decrypt each chunk as it arrives, unmask after UNMASK.

Why two jobs, not one decrypt-and-unmask job per segment as before: SUM chunks reach D
before the unmask shares do (A streams the sum once it has confirmed the survivor set,
while members are still sending UNMASK). Decrypting needs no masks, so D decrypts each
chunk as it comes and adds it, mod p, into its own masked vector in place; that int64
vector (which D held anyway) becomes the masked sum, and no SUM chunk is kept. Once t
unmask answers are in, the masks come off and the fields are decoded segment by
segment, the segment with the weight slot first. The masked sum is uniform noise mod p
until then, as it always was for D.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from fedswarm.secagg.errors import CiphertextLayoutError
from fedswarm.secagg.he import decrypt_chunks, silence_native_stdout
from fedswarm.secagg.masking import apply_masks
from fedswarm.secagg.params import SecAggParams
from fedswarm.secagg.quantise import QuantisationGrid, decode_slots, decode_sum


@dataclass(frozen=True)
class SumChunkJob:
    """One SUM chunk's ciphertexts to decrypt into n_slots int64 words in [0, p)."""

    secret_context: bytes
    chunks: list[bytes]
    n_slots: int
    plain_modulus: int


@dataclass(frozen=True)
class SumChunkOutput:
    values: np.ndarray
    cpu_s: float


def decrypt_sum_chunk(job: SumChunkJob) -> SumChunkOutput:
    """Runs in a worker; TenSEAL's errors on A's bytes become CiphertextLayoutError."""
    silence_native_stdout()
    start = time.process_time()
    try:
        values = decrypt_chunks(job.secret_context, job.chunks, job.n_slots, job.plain_modulus)
    except (ValueError, RuntimeError, TypeError, OverflowError) as exc:
        raise CiphertextLayoutError(f"the aggregator's sum does not decrypt: {exc}") from exc
    return SumChunkOutput(values, time.process_time() - start)


@dataclass(frozen=True)
class UnmaskJob:
    """A segment of the masked sum: remove the masks, decode its fields."""

    values: np.ndarray  # int64 words in [0, p): decrypted sum plus D's own vector
    offset_slots: int
    params: SecAggParams
    group_size: int
    masks: tuple[tuple[bytes, int], ...]
    weight_class: int | None
    range_shift: int
    n_params: int  # coordinates this segment holds
    weight_units: int | None  # None: this segment ends with the weight slot


@dataclass(frozen=True)
class UnmaskOutput:
    average: np.ndarray
    total_weight: float
    weight_units: int
    cpu_s: float


def unmask_segment(job: UnmaskJob) -> UnmaskOutput:
    """Runs in a worker: the only place the plaintext sum of a segment exists."""
    start = time.process_time()
    grid = QuantisationGrid.for_group(job.params, job.group_size, job.weight_class, job.range_shift)
    values = np.array(job.values, dtype=np.int64)  # the job's own copy, changed in place
    apply_masks(
        values,
        [(key, -sign) for key, sign in job.masks],
        grid.plain_modulus,
        offset_words=job.offset_slots,
    )
    if job.weight_units is None:
        average, total_weight = decode_sum(values, grid, job.n_params)
        units = round(total_weight * grid.weight_units)
    else:
        units = job.weight_units
        average = decode_slots(values, grid, units, job.n_params)
        total_weight = units / grid.weight_units
    return UnmaskOutput(average, total_weight, units, time.process_time() - start)
