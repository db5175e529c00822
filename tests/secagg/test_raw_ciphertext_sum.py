"""A adds raw ciphertext coefficients: the sum must decrypt exactly, bad chunks change nothing."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts
from fedswarm.secagg.accumulator import CiphertextAccumulator
from fedswarm.secagg.ciphertext_raw import CiphertextLayout, CompressedBlockError
from fedswarm.secagg.errors import CiphertextLayoutError, MessageFormatError, VectorShapeError
from fedswarm.secagg.he import (
    create_context,
    decrypt_chunks,
    encrypt_vector,
    load_public_context,
)
from fedswarm.secagg.params import batching_plain_modulus

from .conftest import SMALL_PARAMS

N = 2 * SMALL_PARAMS.slot_count + 123  # two full chunks and a partial one
# 40-bit coefficient primes cannot carry v3's 48-bit plain modulus; these tests are about
# how A adds words, not about the plain modulus, so they use a 30-bit one
SMALL_T = batching_plain_modulus(SMALL_PARAMS.poly_modulus_degree, 30)


@pytest.fixture(scope="module")
def material():
    keys = create_context(SMALL_PARAMS)
    context = load_public_context(keys.public_context)
    rng = np.random.default_rng(7)
    values = [rng.integers(0, keys.plain_modulus, N) for _ in range(3)]
    uploads = [encrypt_vector(context, v, SMALL_PARAMS.slot_count) for v in values]
    return keys, values, uploads


def _accumulator(keys) -> CiphertextAccumulator:
    return CiphertextAccumulator(keys.public_context, N, SMALL_PARAMS.slot_count)


def _decrypted_sum(keys, accumulator: CiphertextAccumulator) -> np.ndarray:
    return decrypt_chunks(keys.secret_context, accumulator.serialise(), N, keys.plain_modulus)


def test_sum_of_raw_coefficients_decrypts_to_the_exact_plain_sum(material):
    keys, values, uploads = material
    accumulator = _accumulator(keys)
    for upload in uploads:
        accumulator.add(upload)
    expected = np.sum(np.stack(values), axis=0) % keys.plain_modulus
    np.testing.assert_array_equal(_decrypted_sum(keys, accumulator), expected)


def test_serialised_sum_loads_in_tenseal_and_adds_like_tenseal(material):
    keys, _, uploads = material
    context = load_public_context(keys.public_context)
    accumulator = _accumulator(keys)
    accumulator.add(uploads[0])
    accumulator.add(uploads[1])
    ours = accumulator.serialise()
    layout = CiphertextLayout.for_context(context)
    for i, chunk in enumerate(ours):
        theirs = ts.bfv_vector_from(context, uploads[0][i])
        theirs.add_(ts.bfv_vector_from(context, uploads[1][i]))
        _, want = layout.coefficients(theirs.serialize())
        _, got = layout.coefficients(chunk)
        np.testing.assert_array_equal(got, want)


def _set_first_word(chunk: bytes, layout: CiphertextLayout, value: int) -> bytes:
    """Rewrite the first coefficient word in place (the chunk's data is a raw zstd block)."""
    _, words = layout.coefficients(chunk)
    offset = len(chunk) - 8 * words.size
    return chunk[:offset] + value.to_bytes(8, "little") + chunk[offset + 8 :]


def test_unreduced_coefficient_is_refused_and_the_sum_is_unchanged(material):
    keys, values, uploads = material
    layout = CiphertextLayout.for_context(load_public_context(keys.public_context))
    accumulator = _accumulator(keys)
    accumulator.add(uploads[0])
    bad = list(uploads[1])
    bad[1] = _set_first_word(bad[1], layout, int(layout.modulus_row[0]))
    with pytest.raises(CiphertextLayoutError, match="not reduced"):
        accumulator.add(bad)
    np.testing.assert_array_equal(_decrypted_sum(keys, accumulator), values[0])


def _bfv_context(plain_modulus: int, bits: list[int]) -> ts.Context:
    return ts.context(
        ts.SCHEME_TYPE.BFV,
        poly_modulus_degree=SMALL_PARAMS.poly_modulus_degree,
        plain_modulus=plain_modulus,
        coeff_mod_bit_sizes=bits,
        n_threads=1,
    )


def test_ciphertext_of_other_parameters_is_refused_naming_the_level(material):
    keys, _, uploads = material
    other = _bfv_context(batching_plain_modulus(SMALL_PARAMS.poly_modulus_degree, 20), [60, 49])
    foreign = list(uploads[0])
    foreign[0] = ts.bfv_vector(other, [1, 2, 3]).serialize()
    with pytest.raises(CiphertextLayoutError, match="parms_id"):
        _accumulator(keys).add(foreign)


def test_ciphertext_with_compressible_words_is_refused(material):
    keys, _, uploads = material
    other = _bfv_context(SMALL_T, [40, 40])  # 40-bit words: zstd compresses them
    foreign = [ts.bfv_vector(other, [1, 2, 3]).serialize(), *uploads[0][1:]]
    with pytest.raises(CompressedBlockError):
        _accumulator(keys).add(foreign)


def test_parameters_with_compressible_words_fall_back_to_tenseal_and_sum_exactly(material):
    _, big_values, _ = material
    values = [v % SMALL_T for v in big_values]
    secret = _bfv_context(SMALL_T, [40, 40])
    public = secret.serialize(save_secret_key=False, save_relin_keys=False)
    accumulator = CiphertextAccumulator(public, N, SMALL_PARAMS.slot_count)
    assert not accumulator.adds_raw
    for v in values[:2]:
        accumulator.add(encrypt_vector(secret, v, SMALL_PARAMS.slot_count))
    summed = decrypt_chunks(
        secret.serialize(save_secret_key=True), accumulator.serialise(), N, SMALL_T
    )
    np.testing.assert_array_equal(summed, (values[0] + values[1]) % SMALL_T)


def test_default_parameters_add_raw(material):
    keys, _, _ = material
    assert _accumulator(keys).adds_raw


@pytest.mark.parametrize("cut", [1, 100, 9000])
def test_truncated_or_extended_chunks_raise_layout_errors(material, cut):
    keys, _, uploads = material
    for broken in (uploads[0][0][:-cut], uploads[0][0] + b"\0" * cut):
        chunks = [broken, *uploads[0][1:]]
        with pytest.raises(CiphertextLayoutError):
            _accumulator(keys).add(chunks)


def test_compressed_zstd_block_is_refused_not_guessed(material):
    keys, _, uploads = material
    chunk = bytearray(uploads[0][0])
    frame = chunk.index(b"\x28\xb5\x2f\xfd")
    header_at = frame + 4 + 1 + 2  # magic, descriptor (single segment), 2-byte content size
    chunk[header_at] = (chunk[header_at] & ~0b110) | 0b100  # block type 2: compressed
    with pytest.raises(CiphertextLayoutError, match="compressed block"):
        _accumulator(keys).add([bytes(chunk), *uploads[0][1:]])


def test_wrong_vector_size_and_chunk_count_raise_vector_shape_errors(material):
    keys, _, uploads = material
    with pytest.raises(VectorShapeError):
        _accumulator(keys).add(uploads[0][:-1])
    swapped = [uploads[0][2], uploads[0][1], uploads[0][0]]
    with pytest.raises(VectorShapeError, match="holds"):
        _accumulator(keys).add(swapped)


def test_layout_errors_are_message_format_errors():
    assert issubclass(CiphertextLayoutError, MessageFormatError)


def test_more_uploads_than_unreduced_words_can_hold_still_sum_exactly(material):
    keys, _, _ = material
    context = load_public_context(keys.public_context)
    rng = np.random.default_rng(37)
    accumulator = _accumulator(keys)
    expected = np.zeros(N, dtype=np.int64)
    # 20 > 2^64 // q = 16: every add must stay reduced mod q.  Distinct encryptions, as
    # members upload: one ciphertext added 37 times sums its noise coherently and
    # overflows v3's 48-bit budget, which says nothing about A's arithmetic
    for _ in range(20):
        values = rng.integers(0, keys.plain_modulus, N)
        accumulator.add(encrypt_vector(context, values, SMALL_PARAMS.slot_count))
        expected = (expected + values) % keys.plain_modulus
    np.testing.assert_array_equal(_decrypted_sum(keys, accumulator), expected)


def test_windows_sum_to_exactly_the_whole_sum_cut_at_their_ciphertexts(material):
    # A makes each SUM chunk as a window of ciphertexts from the spool (spool.sum_window)
    keys, _, uploads = material
    whole = _accumulator(keys)
    for upload in uploads:
        whole.add(upload)
    expected = whole.serialise()
    pieces: list[bytes] = []
    for first, stop in ((0, 1), (1, 3)):
        window = whole.window(first, stop)
        assert window.count == 0
        for upload in uploads:
            window.add(upload[first:stop])
        pieces.extend(window.serialise_range(first, stop))
        with pytest.raises(VectorShapeError):
            window.add(uploads[0])  # a whole upload is not this window's ciphertexts
    assert pieces == expected


def test_check_refuses_what_add_refuses_and_adds_nothing(material):
    keys, values, uploads = material
    accumulator = _accumulator(keys)
    accumulator.check(uploads[0][1:], 1)  # a chunk of the upload, at its index
    with pytest.raises(CiphertextLayoutError):
        accumulator.check([uploads[0][1][:-100]], 1)
    with pytest.raises(VectorShapeError, match="holds"):
        accumulator.check([uploads[0][2]], 1)  # the short last ciphertext at index 1
    with pytest.raises(VectorShapeError):
        accumulator.check(uploads[0], 1)  # past the vector's ciphertexts
    assert accumulator.count == 0
    accumulator.add(uploads[0])
    np.testing.assert_array_equal(_decrypted_sum(keys, accumulator), values[0])
