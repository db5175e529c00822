"""The ``[offsite]`` table: which package members train on, and how.

Pure dataclass, no torch: ``fedswarm config check`` reads it. Who the model owner is
comes from the roster (``role = "model_owner"``), never from a member's own config, so
one member cannot name itself owner.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class OffsiteSettings:
    """``package_id``: the sha256 of the package manifest the owner published
    (``fedswarm offsite build`` prints it); every member configures the same one.
    ``package_dir``: where the owner's built package is, or where a member keeps the
    fetched copy (empty: ``STATE_DIR/offsite-package``). ``lora``: train LoRA on the
    adapter layers (``[lora]`` r, alpha, targets) instead of the layers' full weights.
    ``export_dir``: the owner's plugged-in full model, rewritten after each round it
    takes part in (empty: ``STATE_DIR/offsite-export``)."""

    package_id: str = ""
    package_dir: str = ""
    lora: bool = False
    export_dir: str = ""

    def __post_init__(self) -> None:
        if not _SHA256.match(self.package_id):
            raise ValueError(
                "package_id: must be the 64-hex-digit package id that "
                "'fedswarm offsite build' printed"
            )
