"""The sweep splits one step budget into rounds and names each lever's settings."""

from __future__ import annotations

import pytest

from bench.quality_setup import QualityBenchError, RunSettings
from bench.quality_sweep import SweepPoint, settings_for, sweep_points, sweep_table


def test_every_split_keeps_the_steps_per_peer() -> None:
    points = sweep_points(100, [2, 25, 50], ["none", "freeze_a"])
    assert [(p.local_steps, p.rounds, p.lever) for p in points] == [
        (2, 50, "none"), (2, 50, "freeze_a"), (25, 4, "none"), (25, 4, "freeze_a"),
        (50, 2, "none"), (50, 2, "freeze_a")]


def test_a_split_that_changes_the_budget_or_an_unknown_lever_is_refused() -> None:
    with pytest.raises(QualityBenchError, match="does not divide"):
        sweep_points(100, [30], ["none"])
    with pytest.raises(QualityBenchError, match="unknown"):
        sweep_points(100, [25], ["freeze_a+fedadam"])


def test_levers_set_the_federation_settings() -> None:
    base = RunSettings(rounds=1, local_steps=100)
    both = settings_for(base, SweepPoint(25, 4, "freeze_a+momentum"), 0.5)
    assert (both.rounds, both.local_steps, both.freeze_lora_a, both.group_momentum) == \
        (4, 25, True, 0.5)
    none = settings_for(base, SweepPoint(10, 10, "none"), 0.5)
    assert (none.freeze_lora_a, none.group_momentum) == (False, 0.0)


def test_scaffold_is_a_lever_of_its_own() -> None:
    point = sweep_points(100, [25], ["scaffold"])[0]
    settings = settings_for(RunSettings(rounds=1, local_steps=100), point, 0.5)
    assert (settings.scaffold, settings.freeze_lora_a, settings.group_momentum) == \
        (True, False, 0.0)


def test_the_table_keeps_its_columns_for_long_lever_names() -> None:
    row = {"local_steps": 2, "rounds": 2, "lever": "freeze_a+momentum+scaffold",
           "eval_loss_union": 0.8, "fed_over_central": 1.01, "gap_closed": 0.9,
           "bytes_per_peer_run": 1e6, "wall_s": 1.0}
    lines = sweep_table([row], 1.0, 0.79).splitlines()
    assert lines[-1].index("0.8000") + len("0.8000") == lines[2].index("union") + len("union")


def test_a_schedule_decays_over_the_whole_run_at_every_split() -> None:
    from fedswarm.learning.schedule import learning_rate
    from fedswarm.learning.settings import TrainSettings

    base = RunSettings(rounds=1, local_steps=100, lr=1e-2, schedule="cosine")
    for point in sweep_points(100, [2, 25, 50], ["none"]):
        train = TrainSettings(lr=base.lr, **settings_for(base, point, 0.5).train_schedule())
        assert train.total_steps == 100
        assert learning_rate(0, train) == pytest.approx(1e-2)
        assert learning_rate(99, train) < 1e-4  # the last local step of the last round
    constant = TrainSettings(lr=1e-2, **RunSettings(rounds=4, local_steps=25).train_schedule())
    assert learning_rate(99, constant) == pytest.approx(1e-2)
