"""lora_avg refuses to run with a trainer built for other [federation] settings."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fedswarm.federation.exchange import MemberParts
from fedswarm.federation.modes.lora_avg import (
    LoraAveraging,
    LoraAveragingSettings,
    SettingsConflictError,
)


def _parts(freeze_lora_a: bool, control: object = None) -> MemberParts:
    trainer: Any = SimpleNamespace(freeze_lora_a=freeze_lora_a, control=control)
    return MemberParts(trainer=trainer, secure=None, work_dir=Path("."), seed=0)


def test_a_trainer_built_without_frozen_a_is_refused() -> None:
    with pytest.raises(SettingsConflictError, match="freeze_lora_a"):
        LoraAveraging(_parts(False), LoraAveragingSettings(freeze_lora_a=True))
    LoraAveraging(_parts(True), LoraAveragingSettings(freeze_lora_a=True))  # agrees: fine


def test_a_trainer_built_without_control_variates_is_refused() -> None:
    with pytest.raises(SettingsConflictError, match="scaffold"):
        LoraAveraging(_parts(False), LoraAveragingSettings(scaffold=True))
    with pytest.raises(SettingsConflictError, match="scaffold"):
        LoraAveraging(_parts(False, control=object()), LoraAveragingSettings())
