"""The [offsite] table's dataclass: a package id that is not a sha256 is refused in one line."""

from __future__ import annotations

import pytest
from fedswarm.federation.offsite.settings import OffsiteSettings


def test_package_id_must_be_the_printed_sha256() -> None:
    assert OffsiteSettings(package_id="ab" * 32).lora is False
    with pytest.raises(ValueError, match="package_id: must be the 64-hex-digit"):
        OffsiteSettings(package_id="AB" * 32)
    with pytest.raises(ValueError, match="package_id"):
        OffsiteSettings()
