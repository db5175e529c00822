"""Plaintext updates from peers are validated before they are averaged."""

from __future__ import annotations

import numpy as np
import pytest
from fedswarm.federation.averaging.plain import UpdateFormatError, decode_update, encode_update


def test_round_trip_keeps_values_and_weight() -> None:
    vector = np.arange(10, dtype=np.float32) / 7
    decoded, weight = decode_update(encode_update(vector, 42.0), expected_size=10)
    assert weight == 42.0
    np.testing.assert_array_equal(decoded, vector)


def test_wrong_size_is_refused() -> None:
    payload = encode_update(np.zeros(5, np.float32), 1.0)
    with pytest.raises(UpdateFormatError, match="expected 6"):
        decode_update(payload, expected_size=6)


def test_truncated_update_is_refused() -> None:
    payload = encode_update(np.zeros(5, np.float32), 1.0)
    with pytest.raises(UpdateFormatError, match="length"):
        decode_update(payload[:-1], expected_size=5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad: float) -> None:
    vector = np.zeros(5, np.float32)
    vector[2] = bad
    with pytest.raises(UpdateFormatError, match="NaN or Inf"):
        decode_update(encode_update(vector, 1.0), expected_size=5)


@pytest.mark.parametrize("weight", [0.0, -1.0, float("nan")])
def test_non_positive_weight_is_refused(weight: float) -> None:
    with pytest.raises(UpdateFormatError, match="weight"):
        decode_update(encode_update(np.zeros(3, np.float32), weight), expected_size=3)


def test_extreme_values_are_refused() -> None:
    vector = np.zeros(5, np.float32)
    vector[1] = 1e6
    with pytest.raises(UpdateFormatError, match="extreme value"):
        decode_update(encode_update(vector, 1.0), expected_size=5)
