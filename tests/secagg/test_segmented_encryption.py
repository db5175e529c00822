"""A member encrypts in segments: the chunks and masks are exactly those of one job."""

from __future__ import annotations

import numpy as np
import pytest
from fedswarm.secagg.he import (
    EncryptJob,
    create_context,
    decrypt_chunks,
    encrypt_contribution,
    segment_jobs,
)
from fedswarm.secagg.masking import apply_masks
from fedswarm.secagg.params import SecAggParams
from fedswarm.secagg.quantise import QuantisationGrid, decode_sum

KEYS = ((bytes(range(32)), 1), (bytes(range(1, 33)), -1), (bytes(range(2, 34)), 1))


@pytest.mark.parametrize("offset", [0, 1, 7, 8, 9, 4096, 12_345])
def test_masks_applied_from_an_offset_continue_the_same_keystream(offset: int) -> None:
    p = (1 << 47) - 115
    whole = np.zeros(offset + 1000, dtype=np.int64)
    apply_masks(whole, list(KEYS), p)
    tail = np.zeros(1000, dtype=np.int64)
    apply_masks(tail, list(KEYS), p, offset_words=offset)
    np.testing.assert_array_equal(tail, whole[offset:])


@pytest.mark.parametrize("params", [SecAggParams.v3(), SecAggParams(),
                                    SecAggParams.v3(clip_mode="l2", clip_norm=3.0)],
                         ids=["v3", "v2", "v3-l2"])
def test_segmented_upload_decrypts_to_the_same_average_as_one_job(params: SecAggParams) -> None:
    keys = create_context(params)
    k, n = 4, 2 * params.slot_count * params.fields_per_slot + 1_001  # 3 segments of 1 ct
    update = np.random.default_rng(1).uniform(-0.9, 0.9, n).astype(np.float32)
    job = EncryptJob(keys.public_context, update, 2.0, params, k, KEYS,
                     8 if params.packed else None)
    segments = segment_jobs(job, ciphertexts=1)
    assert len(segments) == 3 and [s.weight_slot for s in segments] == [False, False, True]
    chunks = [c for s in segments for c in encrypt_contribution(s).chunks]
    whole = encrypt_contribution(job)
    assert len(chunks) == len(whole.chunks)
    grid = QuantisationGrid.for_group(params, k, job.weight_class)
    results = []
    for pieces in (chunks, whole.chunks):
        values = decrypt_chunks(keys.secret_context, pieces, whole.n_values, grid.plain_modulus)
        apply_masks(values, [(key, -sign) for key, sign in KEYS], grid.plain_modulus)
        results.append(decode_sum(values, grid, n))
    (segmented, w1), (single, w2) = results
    assert w1 == w2 == 2.0
    # stochastic rounding draws differ; both lie within one member's step of the update
    step = 1 / (grid.scale * 2.0)
    expected = update.astype(np.float64)
    if params.clip_mode == "l2":
        expected *= min(1.0, params.clip_norm / float(np.linalg.norm(expected)))
    for average in (segmented, single):
        assert np.max(np.abs(average - expected)) <= step + 1e-7


def test_a_small_update_stays_one_job() -> None:
    params = SecAggParams.v3()
    job = EncryptJob(b"", np.zeros(10, np.float32), 1.0, params, 4, KEYS, 6)
    assert segment_jobs(job) == [job]


def test_aggregator_adds_its_own_plaintext_segment_by_segment() -> None:
    from fedswarm.secagg.accumulator import CiphertextAccumulator
    from fedswarm.secagg.errors import VectorShapeError
    from fedswarm.secagg.plain_add import plain_addend

    params = SecAggParams.v3()
    keys = create_context(params)
    k, n = 4, 2 * params.slot_count * params.fields_per_slot + 1_001
    update = np.random.default_rng(2).uniform(-0.9, 0.9, n).astype(np.float32)
    job = EncryptJob(keys.public_context, update, 2.0, params, k, KEYS, 8)
    segments = segment_jobs(job, ciphertexts=1)
    grid = QuantisationGrid.for_group(params, k, 8)
    slots = grid.encoded_size(n)
    accumulator = CiphertextAccumulator(keys.public_context, slots, params.slot_count)
    rows = [plain_addend(s).rows for s in segments]
    with pytest.raises(VectorShapeError):  # a "last" segment that does not reach the end
        accumulator.add_plain(rows[0], 0, last=True)
    for index, (segment, part) in enumerate(zip(segments, rows, strict=True)):
        accumulator.add_plain(part, segment.offset_slots // params.slot_count,
                              last=index == len(segments) - 1)
    assert accumulator.plain_count == 1
    values = decrypt_chunks(keys.secret_context, accumulator.serialise(), slots,
                            grid.plain_modulus)
    apply_masks(values, [(key, -sign) for key, sign in KEYS], grid.plain_modulus)
    average, weight = decode_sum(values, grid, n)
    assert weight == 2.0
    assert np.max(np.abs(average - update)) <= 1 / (grid.scale * 2.0) + 1e-7


@pytest.mark.parametrize("params", [SecAggParams.v3(), SecAggParams()], ids=["v3", "v2"])
@pytest.mark.parametrize("extra", [1_001, 0], ids=["ragged", "weight-only-last-chunk"])
def test_decryptor_streaming_chunks_publishes_exactly_the_one_segment_average(
    params: SecAggParams, extra: int
) -> None:
    """D's streamed path (stream_decrypt): SUM chunks of one ciphertext decrypted into its
    own vector, then unmasked per chunk, the weight slot's first, equal one segment.

    ``extra = 0`` was found at a real shape (bench.shape_round, Phi-3-mini with 2 layers:
    786,432 adapter values + exp_avg = 1,572,864 = 128 v3 ciphertexts exactly): the weight
    slot is then a chunk of its own, which D refused as "must be 1-D with a weight slot",
    so every member's round aborted."""
    from fedswarm.secagg.chunks import chunk_slots, result_chunk_values
    from fedswarm.secagg.he import add_own_mod_p, mask_contribution
    from fedswarm.secagg.stream_decrypt import (
        SumChunkJob,
        UnmaskJob,
        decrypt_sum_chunk,
        unmask_segment,
    )

    keys = create_context(params)
    k, n = 4, 2 * params.slot_count * params.fields_per_slot + extra
    rng = np.random.default_rng(3)
    wc = 8 if params.packed else None
    member = EncryptJob(keys.public_context, rng.uniform(-0.9, 0.9, n).astype(np.float32),
                        2.0, params, k, KEYS, wc)
    own_job = EncryptJob(keys.public_context, rng.uniform(-0.9, 0.9, n).astype(np.float32),
                         1.0, params, k, tuple((key, -sign) for key, sign in KEYS), wc)
    upload = encrypt_contribution(member)
    masked = mask_contribution(own_job).values  # masks cancel against the member's
    slots, p = upload.n_values, QuantisationGrid.for_group(params, k, wc).plain_modulus
    count = len(upload.chunks)
    for index in range(count):  # one ciphertext per SUM chunk
        first, stop = chunk_slots(index, slots, params.slot_count, 1)
        job = SumChunkJob(keys.secret_context, [upload.chunks[index]], stop - first, p)
        add_own_mod_p(masked[first:stop], decrypt_sum_chunk(job).values, p)

    def unmask(index: int, per_chunk: int, units: int | None):
        first, stop = chunk_slots(index, slots, params.slot_count, per_chunk)
        values = result_chunk_values(index, n, slots, params.slot_count, per_chunk,
                                     params.fields_per_slot)
        return unmask_segment(UnmaskJob(masked[first:stop], first, params, k, (), wc, 0,
                                        values, units))

    whole = unmask(0, 10_000, None)
    tail = unmask(count - 1, 1, None)
    parts = [unmask(i, 1, tail.weight_units).average for i in range(count - 1)]
    streamed = np.concatenate([*parts, tail.average])
    assert tail.total_weight == whole.total_weight == 3.0
    np.testing.assert_array_equal(streamed, whole.average)
    expected = (2.0 * np.clip(member.update, -1, 1) + own_job.update.astype(np.float64)) / 3.0
    grid = QuantisationGrid.for_group(params, k, wc)
    assert np.max(np.abs(streamed - expected)) <= grid.error_bound(3.0) + 1e-7
