"""The validation gate: a group result that raises our own eval loss too much is refused.

issue #19: "a member does not adopt a group average that raises its own eval loss by
more than a set margin, and logs it". With ``[federation] max_eval_loss_increase`` set,
the round runner keeps a rollback point, applies the group's result, evaluates, and
rolls back if the loss rose by more than the margin (or is not a number).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fedswarm.daemon.round_runner import MemberServices, RoundRunner
from fedswarm.federation.exchange import Combined


class LossIsTheMean:
    """A trainer whose eval loss is the mean of its adapter: easy to push up."""

    num_train_samples = 10

    def __init__(self) -> None:
        self.vector = np.zeros(8, dtype=np.float32)

    def evaluate(self) -> Any:
        return SimpleNamespace(loss=float(np.mean(self.vector)))

    def rollback_point(self) -> np.ndarray:
        return self.vector.copy()

    def roll_back(self, point: np.ndarray) -> None:
        self.vector = point.copy()


def _runner(gate: float | None) -> tuple[RoundRunner, LossIsTheMean, list[tuple[Any, ...]]]:
    trainer = LossIsTheMean()
    rejections: list[tuple[Any, ...]] = []
    services = MemberServices(
        me="me",
        config=SimpleNamespace(  # type: ignore[arg-type]
            federation=SimpleNamespace(max_eval_loss_increase=gate, rounds=0),
            state_dir=Path("."),
        ),
        trainer=trainer,  # type: ignore[arg-type]
        store=None,  # type: ignore[arg-type]
        events=None,  # type: ignore[arg-type]
        mailbox=None,  # type: ignore[arg-type]
        link=None,  # type: ignore[arg-type]
        exchange=None,  # type: ignore[arg-type]
        adapters=None,  # type: ignore[arg-type]
        view=dict,
        heartbeat_interval=lambda: 2.0,
        is_member=lambda peer: True,
        up_members=lambda: ["me"],
        planning_members=lambda: ["me"],
        set_phase=lambda phase: None,
        reject=lambda *args: rejections.append(args),
        stopping=asyncio.Event(),
    )
    runner = RoundRunner(services)
    runner.progress.mass = 10.0
    return runner, trainer, rejections


def _result(trainer: LossIsTheMean, value: float) -> Combined:
    def apply() -> None:
        trainer.vector = np.full(8, value, dtype=np.float32)
    return Combined(record={"survivors": 3}, carried_weight=30.0, apply=apply)


async def _apply(runner: RoundRunner, trainer: LossIsTheMean, value: float) -> Any:
    point = (None if runner.s.config.federation.max_eval_loss_increase is None
             else trainer.rollback_point())
    return await runner._apply(5, _result(trainer, value), 0.0, point)  # type: ignore[arg-type]


async def test_a_result_raising_the_loss_beyond_the_margin_is_rolled_back() -> None:
    runner, trainer, rejections = _runner(gate=0.1)
    combined, status, note, eval_after = await _apply(runner, trainer, 0.5)
    assert (combined, status, eval_after) == (None, "refused", 0.0)
    assert "0.0000 to 0.5000" in note
    np.testing.assert_array_equal(trainer.vector, np.zeros(8, np.float32))
    assert runner.progress.mass == 10.0  # the group's carried weight is not taken
    assert runner.progress.last_aggregated_round is None
    assert [(peer, kind) for peer, kind, _ in rejections] == [(None, "validation")]


async def test_a_result_within_the_margin_is_kept() -> None:
    runner, trainer, rejections = _runner(gate=0.1)
    combined, status, _, eval_after = await _apply(runner, trainer, 0.05)
    assert status == "complete" and combined is not None
    assert eval_after == pytest.approx(0.05)
    assert runner.progress.mass == 30.0
    assert runner.progress.last_aggregated_round == 5
    assert rejections == []


async def test_a_result_that_makes_the_loss_nan_is_refused() -> None:
    runner, trainer, _ = _runner(gate=10.0)
    _, status, _, _ = await _apply(runner, trainer, float("nan"))
    assert status == "refused"
    assert not np.isnan(trainer.vector).any()


async def test_without_a_margin_every_result_is_applied_unchecked() -> None:
    runner, trainer, rejections = _runner(gate=None)
    combined, status, _, eval_after = await _apply(runner, trainer, 0.5)
    assert status == "complete" and combined is not None
    assert eval_after is None  # not evaluated here; the checkpoint step does it
    np.testing.assert_array_equal(trainer.vector, np.full(8, 0.5, np.float32))
    assert rejections == []


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_the_margin_must_be_a_finite_non_negative_number(bad: float) -> None:
    from fedswarm.daemon.config import FederationSettings

    with pytest.raises(ValueError, match="max_eval_loss_increase"):
        FederationSettings(max_eval_loss_increase=bad)


async def test_a_refused_result_also_undoes_what_the_mode_keeps_itself() -> None:
    """Group momentum lives in the mode, not the trainer: a refused result's step must
    not stay in it (``Combined.undo``); an accepted one's must."""
    runner, trainer, _ = _runner(gate=0.5)
    undone: list[float] = []
    for value, refused in ((5.0, True), (0.2, False)):
        result = _result(trainer, value)
        result.undo = lambda value=value: undone.append(value)
        point = trainer.rollback_point()
        _, status, _, _ = await runner._apply(5, result, 0.0, point)  # type: ignore[arg-type]
        assert status == ("refused" if refused else "complete")
    assert undone == [5.0]
