"""reduce_mod must equal np.remainder bit for bit: masks and decryption depend on it."""

from __future__ import annotations

import numpy as np
import pytest
from fedswarm.secagg.modular import reduce_mod
from fedswarm.secagg.params import batching_plain_modulus

P = batching_plain_modulus(4096, 30)


@pytest.mark.parametrize("modulus", [P, 3, (1 << 40) - 87])
def test_unsigned_words_over_the_whole_64_bit_range_reduce_like_remainder(modulus):
    rng = np.random.default_rng(1)
    words = rng.integers(0, np.iinfo(np.uint64).max, 50_000, dtype=np.uint64, endpoint=True)
    words[:4] = [0, modulus - 1, modulus, np.iinfo(np.uint64).max]
    out = np.empty_like(words)
    reduce_mod(words, modulus, out, np.empty_like(words))
    np.testing.assert_array_equal(out, np.remainder(words, np.uint64(modulus)))


def test_signed_values_reduce_in_place_to_the_floor_modulus():
    rng = np.random.default_rng(2)
    values = rng.integers(-9 * P, 9 * P, 50_000, dtype=np.int64)
    values[:3] = [-1, -P, P]
    expected = np.remainder(values, P)
    reduce_mod(values, P, values, np.empty_like(values))
    np.testing.assert_array_equal(values, expected)
    assert values.min() >= 0 and values.max() < P


def test_non_positive_modulus_is_refused():
    values = np.arange(4, dtype=np.int64)
    with pytest.raises(ValueError):
        reduce_mod(values, 0, values, np.empty_like(values))
