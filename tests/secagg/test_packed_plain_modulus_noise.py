"""v3's 48-bit plain modulus is justified by measurement: the largest allowed sum decrypts.

BFV decrypts correctly only while the summed noise stays under q / (2t); a larger plain
modulus t leaves less room.  v2 capped t at 40 bits; v3 uses 48 and allows groups of up
to MAX_GROUP_V3.  These tests add that many fresh, independent encryptions of uniformly
random plaintexts (what members upload: masked values are uniform mod t) and require an
exact decryption.  The control shows the same test fails when the budget is exceeded.
"""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts
from fedswarm.secagg.errors import ParameterSecurityError
from fedswarm.secagg.he import encrypt_vector
from fedswarm.secagg.params import (
    MAX_GROUP_V3,
    MAX_PLAIN_MODULUS_BITS_V3,
    SecAggParams,
    batching_plain_modulus,
)

SLOTS = 4096


def _sum_decrypts_exactly(plain_bits: int, summands: int, seed: int) -> bool:
    params = SecAggParams.v3()
    t = batching_plain_modulus(params.poly_modulus_degree, plain_bits)
    context = ts.context(
        ts.SCHEME_TYPE.BFV,
        poly_modulus_degree=params.poly_modulus_degree,
        plain_modulus=t,
        coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
        n_threads=1,
    )
    rng = np.random.default_rng(seed)
    expected = np.zeros(SLOTS, dtype=np.int64)
    total = None
    for _ in range(summands):
        values = rng.integers(0, t, SLOTS, dtype=np.int64)
        expected = (expected + values) % t
        vector = ts.bfv_vector_from(context, encrypt_vector(context, values, SLOTS)[0])
        total = vector if total is None else total + vector
    assert total is not None
    decrypted = np.array(total.decrypt(), dtype=np.int64) % t
    return bool(np.array_equal(decrypted, expected))


@pytest.mark.parametrize("seed", [0, 1])
def test_sum_of_the_largest_v3_group_decrypts_exactly_at_48_bits(seed: int) -> None:
    assert _sum_decrypts_exactly(MAX_PLAIN_MODULUS_BITS_V3, MAX_GROUP_V3, seed)


def test_the_budget_keeps_a_bit_in_reserve_four_times_the_largest_group_decrypts() -> None:
    assert _sum_decrypts_exactly(MAX_PLAIN_MODULUS_BITS_V3, 4 * MAX_GROUP_V3, seed=2)


def test_control_a_52_bit_plain_modulus_overflows_the_noise_budget() -> None:
    """Measured: 52 bits fails already at 16 summands, so the exactness check can fail."""
    assert not _sum_decrypts_exactly(52, 16, seed=0)


def test_v3_refuses_plain_moduli_above_the_measured_cap() -> None:
    SecAggParams.v3().validate()
    with pytest.raises(ParameterSecurityError, match="noise budget"):
        SecAggParams.v3(plain_modulus_bits=MAX_PLAIN_MODULUS_BITS_V3 + 1).validate()
    with pytest.raises(ParameterSecurityError, match="noise budget"):
        SecAggParams.v3(coeff_mod_bit_sizes=(50, 49)).validate()


def test_v3_still_refuses_parameters_below_128_bit_security() -> None:
    assert SecAggParams.v3().security_bits() == 128
    with pytest.raises(ParameterSecurityError, match="below 128-bit"):
        SecAggParams.v3(coeff_mod_bit_sizes=(60, 60)).validate()


def test_v2_keeps_its_40_bit_cap() -> None:
    with pytest.raises(ParameterSecurityError, match=r"17\.\.40"):
        SecAggParams(plain_modulus_bits=48).validate()
    with pytest.raises(ParameterSecurityError, match="one value per slot"):
        SecAggParams(fields_per_slot=3).validate()
