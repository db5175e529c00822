"""What A and D can see: A cannot decrypt; D (even with A) sees only masked noise."""

from __future__ import annotations

import nacl.public
import numpy as np
import pytest
import tenseal as ts
from fedswarm.secagg.accumulator import CiphertextAccumulator
from fedswarm.secagg.errors import SecretKeyMissingError
from fedswarm.secagg.he import (
    EncryptJob,
    create_context,
    decrypt_chunks,
    encrypt_contribution,
)
from fedswarm.secagg.masking import apply_mask, derive_mask_key, pairwise_secret, pairwise_sign
from fedswarm.secagg.quantise import (
    QuantisationGrid,
    encode_contribution,
    unpack_fields,
    weight_class,
)

from .conftest import SMALL_PARAMS, random_updates

K = 4
N = 5000
BINDING = b"fed|group|round-1"
# every member weighs 1.0: on v3 the group's grid is sized for that weight class
WEIGHT_CLASS = weight_class(1.0, SMALL_PARAMS) if SMALL_PARAMS.packed else None
GRID = QuantisationGrid.for_group(SMALL_PARAMS, K, WEIGHT_CLASS)
SLOTS = GRID.encoded_size(N)  # SLOTS on v2; v3 packs fields_per_slot values per slot


@pytest.fixture(scope="module")
def round_material():
    """Real context, keys, masks and ciphertexts for K members, built like the session."""
    keys = create_context(SMALL_PARAMS)
    members = [f"m{i}" for i in range(K)]
    mask_keys = {m: nacl.public.PrivateKey.generate() for m in members}
    seeds = {m: bytes([i + 1]) * 32 for i, m in enumerate(members)}
    updates = random_updates(K, N, seed=5)
    jobs, uploads = [], []
    for i, me in enumerate(members):
        masks = [(derive_mask_key(seeds[me], BINDING, b"self"), 1)]
        for other in members:
            if other != me:
                secret = pairwise_secret(bytes(mask_keys[me]), bytes(mask_keys[other].public_key))
                masks.append((derive_mask_key(secret, BINDING, b"pair"), pairwise_sign(me, other)))
        job = EncryptJob(
            keys.public_context, updates[i], 1.0, SMALL_PARAMS, K, tuple(masks), WEIGHT_CLASS
        )
        jobs.append(job)
        uploads.append(encrypt_contribution(job))
    return keys, members, seeds, updates, uploads


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64), b.astype(np.float64))[0, 1])


def centred(values: np.ndarray, p: int) -> np.ndarray:
    """Slots read as signed integers, and packed fields split out: one number per value."""
    signed = np.where(values > p // 2, values - p, values)
    if not GRID.packed:
        return signed
    return unpack_fields(signed, GRID).reshape(-1)[:N]


def test_aggregator_cannot_decrypt_with_the_public_context(round_material):
    keys, _, _, _, uploads = round_material
    with pytest.raises(SecretKeyMissingError):
        decrypt_chunks(keys.public_context, uploads[0].chunks, SLOTS, keys.plain_modulus)
    public = ts.context_from(keys.public_context)
    assert not public.is_private()
    with pytest.raises(ValueError):
        ts.bfv_vector_from(public, uploads[0].chunks[0]).decrypt()


def test_decryptor_sees_noise_in_the_sum_before_unmasking(round_material):
    keys, members, seeds, updates, uploads = round_material
    accumulator = CiphertextAccumulator(keys.public_context, SLOTS, SMALL_PARAMS.slot_count)
    for upload in uploads:
        accumulator.add(upload.chunks)
    summed = decrypt_chunks(keys.secret_context, accumulator.serialise(), SLOTS, keys.plain_modulus)
    true_sum = np.sum(np.stack(updates), axis=0)
    p = keys.plain_modulus
    assert abs(corr(centred(summed[:-1], p), true_sum)) < 0.1
    # Control: removing the self masks (what the unmask step does) reveals the sum.
    for member in members:
        apply_mask(summed, derive_mask_key(seeds[member], BINDING, b"self"), -1, p)
    assert corr(centred(summed[:-1], p), true_sum) > 0.999


def test_aggregator_and_decryptor_together_learn_nothing_from_one_ciphertext(round_material):
    keys, _, _, updates, uploads = round_material
    single = decrypt_chunks(keys.secret_context, uploads[0].chunks, SLOTS, keys.plain_modulus)
    assert abs(corr(centred(single[:-1], keys.plain_modulus), updates[0])) < 0.1
    plain = encode_contribution(updates[0], 1.0, SMALL_PARAMS, GRID, np.random.default_rng(0))
    assert not np.array_equal(single, plain)
