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


def test_payloads_built_chunk_by_chunk_are_byte_identical_to_encode() -> None:
    from fedswarm.secagg.errors import MessageFormatError
    from fedswarm.secagg.payloads import SumPayload, UploadPayload

    chunks = [bytes([i]) * (100 + i) for i in range(5)]
    upload = UploadPayload.writer(("a", "b"), 42, len(chunks))
    total = SumPayload.writer(b"d" * 32, 42, len(chunks))
    for chunk in chunks:
        upload.add(chunk)
        total.add(chunk)
    assert bytes(upload.finish()) == UploadPayload(("a", "b"), 42, chunks).encode()
    assert bytes(total.finish()) == SumPayload(b"d" * 32, 42, chunks).encode()
    short = UploadPayload.writer(("a",), 1, 2)
    short.add(b"x")
    with pytest.raises(MessageFormatError):
        short.finish()
    with pytest.raises(MessageFormatError):
        short.add(b"y")
        short.add(b"z")


@pytest.mark.parametrize("params", [SecAggParams.v3(), SecAggParams()], ids=["v3", "v2"])
async def test_decryptor_in_segments_publishes_exactly_the_one_job_average(
    params: SecAggParams,
) -> None:
    from fedswarm.secagg.he import DecryptJob, decrypt_all, decrypt_and_unmask, mask_contribution

    keys = create_context(params)
    k, n = 4, 2 * params.slot_count * params.fields_per_slot + 1_001
    rng = np.random.default_rng(3)
    wc = 8 if params.packed else None
    member = EncryptJob(keys.public_context, rng.uniform(-0.9, 0.9, n).astype(np.float32),
                        2.0, params, k, KEYS, wc)
    own_job = EncryptJob(keys.public_context, rng.uniform(-0.9, 0.9, n).astype(np.float32),
                         1.0, params, k, tuple((key, -sign) for key, sign in KEYS), wc)
    upload = encrypt_contribution(member)
    own = mask_contribution(own_job).values  # masks cancel against the member's
    job = DecryptJob(keys.secret_context, [memoryview(c) for c in upload.chunks],
                     upload.n_values, params, k, (), own, wc, n)

    async def run(segment: DecryptJob):
        return decrypt_and_unmask(segment)

    segmented = await decrypt_all(job, run, ciphertexts=1)
    whole = await decrypt_all(job, run, ciphertexts=10_000)
    assert segmented.total_weight == whole.total_weight == 3.0
    np.testing.assert_array_equal(segmented.average, whole.average)
    expected = (2.0 * np.clip(member.update, -1, 1) + own_job.update.astype(np.float64)) / 3.0
    grid = QuantisationGrid.for_group(params, k, wc)
    assert np.max(np.abs(segmented.average - expected)) <= grid.error_bound(3.0) + 1e-7


@pytest.mark.parametrize("params", [SecAggParams.v3(), SecAggParams()], ids=["v3", "v2"])
async def test_a_sum_that_fills_whole_segments_decrypts_its_weight_only_segment(
    params: SecAggParams,
) -> None:
    """Found at a real shape (bench.shape_round, Phi-3-mini with 2 layers): 786,432 adapter
    values + exp_avg = 1,572,864 = 128 ciphertexts of 3 fields exactly, so the weight slot
    was a decryption segment of its own and D refused it as "must be 1-D with a weight
    slot": every member's round aborted."""
    from fedswarm.secagg.he import DecryptJob, decrypt_all, decrypt_and_unmask, mask_contribution

    keys = create_context(params)
    k, n = 4, 2 * params.slot_count * params.fields_per_slot  # 2 full ciphertexts + weight
    rng = np.random.default_rng(4)
    wc = 8 if params.packed else None
    member = EncryptJob(keys.public_context, rng.uniform(-0.9, 0.9, n).astype(np.float32),
                        2.0, params, k, KEYS, wc)
    own_job = EncryptJob(keys.public_context, rng.uniform(-0.9, 0.9, n).astype(np.float32),
                         1.0, params, k, tuple((key, -sign) for key, sign in KEYS), wc)
    upload = encrypt_contribution(member)
    assert upload.n_values == 2 * params.slot_count + 1
    own = mask_contribution(own_job).values
    job = DecryptJob(keys.secret_context, [memoryview(c) for c in upload.chunks],
                     upload.n_values, params, k, (), own, wc, n)

    async def run(segment: DecryptJob):
        return decrypt_and_unmask(segment)

    segmented = await decrypt_all(job, run, ciphertexts=1)  # segments: 4096, 4096, 1 slot
    whole = await decrypt_all(job, run, ciphertexts=10_000)
    assert segmented.total_weight == whole.total_weight == 3.0
    np.testing.assert_array_equal(segmented.average, whole.average)
    expected = (2.0 * np.clip(member.update, -1, 1) + own_job.update.astype(np.float64)) / 3.0
    grid = QuantisationGrid.for_group(params, k, wc)
    assert np.max(np.abs(segmented.average - expected)) <= grid.error_bound(3.0) + 1e-7
