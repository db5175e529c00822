"""Pure building blocks: Shamir, quantisation bound, masks cancelling, roles rotating."""

from __future__ import annotations

import secrets

import numpy as np
import pytest
from fedswarm.secagg.errors import ProtocolViolationError
from fedswarm.secagg.masking import apply_mask, keystream_mask
from fedswarm.secagg.params import SecAggParams, batching_plain_modulus
from fedswarm.secagg.quantise import QuantisationGrid, decode_sum, encode_contribution
from fedswarm.secagg.roles import assign_roles
from fedswarm.secagg.shamir import reconstruct_secret, split_secret, threshold_for


def test_any_threshold_shares_reconstruct_and_fewer_do_not():
    secret = secrets.token_bytes(32)
    shares = split_secret(secret, 8, threshold_for(8))
    assert threshold_for(8) == 5
    assert reconstruct_secret(shares[3:8], 5) == secret
    assert reconstruct_secret(shares[::-1][:5], 5) == secret
    with pytest.raises(ProtocolViolationError):
        reconstruct_secret(shares[:4], 5)
    with pytest.raises(ProtocolViolationError):  # 4 points of a degree-4 polynomial: junk
        reconstruct_secret(shares[:4], 4)


def test_batching_modulus_is_a_30_bit_prime_one_mod_2n():
    p = batching_plain_modulus(4096, 30)
    assert p.bit_length() == 30 and p % 8192 == 1
    assert all(p % d for d in range(2, 1000))


@pytest.mark.parametrize("mode", ["stochastic", "nearest"])
def test_extreme_updates_from_k_members_do_not_wrap(mode):
    k = 16
    params = SecAggParams(quantisation=mode, clip_norm=1.0)
    grid = QuantisationGrid.for_group(params, k)
    rng = np.random.default_rng(0)
    update = np.array([1.0, -1.0, 5.0, -5.0, 0.25], np.float32)  # 5.0 is clipped to 1.0
    total = np.zeros(update.size + 1, np.int64)
    for _ in range(k):
        total = total + encode_contribution(update, params.max_weight, params, grid, rng)
        total %= grid.plain_modulus
    average, weight = decode_sum(total, grid)
    clipped = np.clip(update, -1, 1)
    assert weight == pytest.approx(k * params.max_weight)
    assert np.max(np.abs(average - clipped)) <= grid.error_bound(weight) + 1e-7


def test_l2_clipping_scales_the_whole_update():
    params = SecAggParams(clip_mode="l2", clip_norm=1.0)
    grid = QuantisationGrid.for_group(params, 3)
    update = np.array([3.0, 4.0], np.float32)  # norm 5 -> scaled to (0.6, 0.8)
    values = encode_contribution(update, 1.0, params, grid, np.random.default_rng(1))
    average, _ = decode_sum(values, grid)
    assert np.allclose(average, [0.6, 0.8], atol=grid.error_bound(1.0))


def test_opposite_pairwise_masks_cancel_and_a_single_mask_hides():
    p = batching_plain_modulus(4096, 30)
    key = secrets.token_bytes(32)
    values = np.arange(1000, dtype=np.int64)
    original = values.copy()
    apply_mask(values, key, +1, p)
    assert np.mean(values == original) < 0.01
    apply_mask(values, key, -1, p)
    assert np.array_equal(values, original)
    assert keystream_mask(key, 10, p).max() < p


def test_roles_are_deterministic_distinct_and_rotate():
    members = [f"p{i}" for i in range(5)]
    seen = set()
    for r in range(5):
        a, d = assign_roles(members, r, "g")
        assert a != d and {a, d} <= set(members)
        assert assign_roles(list(reversed(members)), r, "g") == (a, d)
        seen.add(a)
    assert seen == set(members)
