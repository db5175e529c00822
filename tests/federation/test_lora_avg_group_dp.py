"""lora_avg with group-level DP: it sends anchor + clipped change with the noisy parameters."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fedswarm.federation.averaging.group_dp import GroupPrivacy, group_dp_params
from fedswarm.federation.averaging.result import GroupAverage
from fedswarm.federation.errors import RoundAbortedError
from fedswarm.federation.exchange import MemberParts
from fedswarm.federation.mailbox import Mailbox
from fedswarm.federation.modes.lora_avg import LoraAveraging, LoraAveragingSettings
from fedswarm.federation.round import RoundContext
from fedswarm.learning.group_privacy import GroupBudget
from fedswarm.secagg.distributed_dp import GroupNoise
from fedswarm.secagg.params import PROTOCOL_V3

NOISE = GroupNoise(noise_multiplier=4.0, update_clip=0.1, min_survivors=3)
GROUP = ("peer-a", "peer-b", "peer-c")


class FakeTrainer:
    """The LocalTrainer surface lora_avg touches: a vector that training moves."""

    freeze_lora_a = False
    control = None
    adapter_size = 50

    def __init__(self) -> None:
        self.vector = np.zeros(100, np.float32)
        self.loaded: np.ndarray | None = None

    def averaging_vector(self, with_moments: bool) -> np.ndarray:
        return self.vector.copy()

    def train(self) -> Any:
        self.vector = self.vector + 0.3  # |change| = 3, thirty times the clip
        return SimpleNamespace(loss=1.0)

    def load_averaging_vector(self, vector: np.ndarray, with_moments: bool) -> None:
        self.loaded = vector


class FakeSecure:
    def __init__(self) -> None:
        self.sent: list[tuple[np.ndarray, Any]] = []

    async def average(self, ctx: Any, vector: np.ndarray, weight: float, params: Any) -> Any:
        self.sent.append((vector, params))
        return GroupAverage(
            average=np.full(vector.size, 0.05, np.float32),
            total_weight=3.0,
            survivors=list(GROUP),
            dropped=[],
            protocol=PROTOCOL_V3,
        )


def _ctx() -> RoundContext:
    return RoundContext(
        me="peer-a",
        round=1,
        members=GROUP,
        link=None,  # type: ignore[arg-type]
        mailbox=Mailbox(max_bytes_per_sender_per_round=1024),
        deadline=time.monotonic() + 5,
        on_reject=lambda *_: None,
    )


def _mode(
    trainer: FakeTrainer, secure: FakeSecure, privacy: GroupPrivacy, work_dir: Path
) -> LoraAveraging:
    """LoRA averaging (optimizer moments not averaged) over the fakes, with group-level DP."""
    parts = MemberParts(
        trainer=trainer,
        secure=secure,
        work_dir=work_dir,  # type: ignore
        seed=0,
        group_dp=privacy,
    )
    return LoraAveraging(parts, LoraAveragingSettings(average_optimizer_state=False))


async def test_the_mode_sends_the_clipped_change_and_takes_the_result_as_its_anchor(
    tmp_path: Path,
) -> None:
    trainer, secure = FakeTrainer(), FakeSecure()
    released: list[float] = []
    privacy = GroupPrivacy(
        group_dp_params(PROTOCOL_V3, NOISE), GroupBudget(1e-5), 6, on_release=released.append
    )
    mode = _mode(trainer, secure, privacy, tmp_path)
    mode.train()
    await mode.combine(_ctx(), 400.0)
    sent, params = secure.sent[0]
    assert np.linalg.norm(sent) == pytest.approx(0.1)  # anchor 0 + change clipped to 0.1
    assert params.group_noise == NOISE and params.fields_per_slot == 2
    assert len(released) == 1 and privacy.budget.rounds == 1
    np.testing.assert_allclose(privacy.anchor.vector, 0.05)  # the release, not our training
    mode.train()
    await mode.combine(_ctx(), 400.0)
    assert np.linalg.norm(secure.sent[1][0] - 0.05) == pytest.approx(0.1)


async def test_a_spent_budget_aborts_the_round_before_anything_is_sent(tmp_path: Path) -> None:
    trainer, secure = FakeTrainer(), FakeSecure()
    privacy = GroupPrivacy(group_dp_params(PROTOCOL_V3, NOISE), GroupBudget(1e-5, 0.01), 6)
    mode = _mode(trainer, secure, privacy, tmp_path)
    mode.train()
    with pytest.raises(RoundAbortedError, match="group-level privacy budget spent"):
        await mode.combine(_ctx(), 400.0)
    assert secure.sent == []
