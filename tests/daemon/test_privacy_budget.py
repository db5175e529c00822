"""The DP budget in the daemon: persisted before it is spent, enforced, and shown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fedswarm.daemon.cli import privacy_line
from fedswarm.daemon.round_runner import MemberServices, RoundRunner
from fedswarm.daemon.state import StateStore
from fedswarm.daemon.views.prometheus import MetricsSnapshot, render_metrics
from fedswarm.learning.errors import PrivacyBudgetSpentError


def test_the_spend_log_survives_a_restart_of_the_state_store(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    store.add_privacy_spend(1, 20, 1.1, 0.02)
    store.add_privacy_spend(2, 7, 1.1, 0.02)
    store.close()
    reopened = StateStore.open(tmp_path)
    assert reopened.privacy_spend() == [(20, 1.1, 0.02), (7, 1.1, 0.02)]
    reopened.close()


class BudgetSpentExchange:
    def __init__(self) -> None:
        self.calls = 0

    def train(self) -> float | None:
        self.calls += 1
        raise PrivacyBudgetSpentError("privacy budget spent: ε = 2.990 of 3")


def _runner(exchange: BudgetSpentExchange) -> RoundRunner:
    recorder = SimpleNamespace(update_round=lambda *a, **k: None)
    services = MemberServices(
        me="me",
        config=SimpleNamespace(  # type: ignore[arg-type]
            federation=SimpleNamespace(rounds=0, final_averaging_rounds=0), state_dir=Path("."),
        ),
        trainer=SimpleNamespace(evaluate=lambda: SimpleNamespace(loss=1.0)),  # type: ignore[arg-type]
        store=recorder,  # type: ignore[arg-type]
        events=SimpleNamespace(publish=lambda *a, **k: None),  # type: ignore[arg-type]
        mailbox=None,  # type: ignore[arg-type]
        link=None,  # type: ignore[arg-type]
        exchange=exchange,  # type: ignore[arg-type]
        adapters=None,  # type: ignore[arg-type]
        view=dict,
        heartbeat_interval=lambda: 2.0,
        is_member=lambda peer: True,
        up_members=lambda: ["me"],
        planning_members=lambda: ["me"],
        set_phase=lambda phase: None,
        reject=lambda *args: None,
        stopping=asyncio.Event(),
    )
    return RoundRunner(services)


async def test_a_spent_budget_stops_training_for_good_with_one_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    exchange = BudgetSpentExchange()
    runner = _runner(exchange)
    with caplog.at_level(logging.WARNING, logger="fedswarm.daemon.rounds"):
        assert await runner._train(4) == (None, 1.0)
        assert await runner._train(5) == (None, 1.0)  # evaluated, not trained
    assert exchange.calls == 1
    assert runner.privacy_spent
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "privacy budget spent" in lines[0]
    assert "still serving and averaging" in lines[0]


def test_metrics_show_epsilon_spent_target_and_remaining() -> None:
    text = render_metrics(MetricsSnapshot(state="training", up_since=1.0,
                                          privacy_epsilon_spent=1.25,
                                          privacy_epsilon_target=3.0))
    assert "fedswarm_privacy_epsilon_spent 1.25" in text
    assert "fedswarm_privacy_epsilon_target 3" in text
    assert "fedswarm_privacy_epsilon_remaining 1.75" in text
    assert "privacy" not in render_metrics(MetricsSnapshot(state="training", up_since=1.0))


def test_status_says_how_much_epsilon_is_left() -> None:
    assert privacy_line({"enabled": False}) == "off"
    line = privacy_line({"enabled": True, "epsilon_spent": 1.25, "epsilon_target": 3.0,
                         "epsilon_remaining": 1.75, "delta": 0.001, "training_stopped": True})
    assert line == "ε 1.250 spent of 3, 1.750 left (δ 0.001); budget spent, training stopped"


def _with_privacy(config: Path, target_epsilon: float, packing: bool = False) -> None:
    text = config.read_text()
    if not packing:
        text = text.replace("# packing = true", "packing = false")
    text = text.replace("[privacy]\nenabled = false", "[privacy]\nenabled = true\n"
                        f"target_epsilon = {target_epsilon}\nnoise_multiplier = 0.5")
    config.write_text(text)


@pytest.mark.parametrize("command", [("run",), ("config", "check")])
def test_a_budget_that_cannot_cover_one_round_is_refused_by_run_and_check(
        node_config: Path, run_cli: Callable[..., Any],
        one_line_error: Callable[..., str], command: tuple[str, ...]) -> None:
    _with_privacy(node_config, 0.1)
    result = run_cli(*command, "--config", str(node_config))
    one_line_error(result, "[privacy] target_epsilon = 0.1 cannot cover one round")


def test_config_check_refuses_packed_text_and_accepts_a_budget_that_fits(
        node_config: Path, run_cli: Callable[..., Any],
        one_line_error: Callable[..., str]) -> None:
    original = node_config.read_text()
    _with_privacy(node_config, 1000.0, packing=True)
    one_line_error(run_cli("config", "check", "--config", str(node_config)),
                   "[privacy] enabled: data.packing = true")
    node_config.write_text(original)
    _with_privacy(node_config, 1000.0)
    result = run_cli("config", "check", "--config", str(node_config))
    assert result.returncode == 0, result.stderr
    assert ": ok (" in result.stdout


def test_privacy_with_a_mode_that_trains_outside_dp_sgd_is_refused(tmp_path: Path) -> None:
    from fedswarm.daemon.config import config_from_dict
    from fedswarm.daemon.errors import ConfigError

    document = {"node": {"org": "a"}, "model": {"path": "m"}, "data": {"train_path": "t"},
                "federation": {"mode": "fedmkt"}, "privacy": {"enabled": True}}
    with pytest.raises(ConfigError, match=r"\[privacy\] enabled: federation.mode = 'fedmkt'"):
        config_from_dict(document, source=tmp_path / "config.toml")
    document["federation"] = {"mode": "lora_avg"}
    assert config_from_dict(document, source=tmp_path / "config.toml").privacy.enabled


def test_the_model_card_states_the_epsilon_spent() -> None:
    from fedswarm.daemon.model_card import _privacy_statement
    from fedswarm.learning.privacy import Spend, epsilon_of
    from fedswarm.learning.settings import PrivacySettings

    config = SimpleNamespace(node=SimpleNamespace(org="bank-a"), privacy=PrivacySettings(
        enabled=True, target_epsilon=3.0, noise_multiplier=1.0))
    text = _privacy_statement(config, 400, [(30, 1.0, 0.02), (15, 1.0, 0.02)])
    expected = epsilon_of([Spend(1.0, 0.02, 45)], 1 / 400)
    assert text is not None and f"ε = {expected:.3f} of a 3 budget" in text
    assert "after 45 steps" in text
    config.privacy = PrivacySettings()
    assert _privacy_statement(config, 400, []) is None


def test_api_status_reports_the_budget_and_what_it_does_not_cover() -> None:
    from fedswarm.daemon.views.status import NOT_COVERED_BY_DP, DaemonStatusView
    from fedswarm.learning.privacy import PrivacyBudget, Spend, epsilon_of, make_plan
    from fedswarm.learning.settings import PrivacySettings, TrainSettings

    plan = make_plan(PrivacySettings(enabled=True, target_epsilon=3.0, noise_multiplier=1.0),
                     TrainSettings(local_steps=15, batch_size=8), examples=400)
    budget = PrivacyBudget(plan, [Spend(1.0, plan.sample_rate, 45)])
    view = DaemonStatusView.__new__(DaemonStatusView)
    view._d = SimpleNamespace(trainer=SimpleNamespace(privacy=budget),  # type: ignore[assignment]
                              runner=SimpleNamespace(privacy_spent=False))
    shown = view.privacy()
    spent = epsilon_of([Spend(1.0, 0.02, 45)], 1 / 400)
    assert shown["epsilon_spent"] == pytest.approx(spent)
    assert shown["epsilon_remaining"] == pytest.approx(3.0 - spent)
    assert shown["steps"] == 45 and shown["delta"] == pytest.approx(1 / 400)
    assert shown["not_covered"] == NOT_COVERED_BY_DP and not shown["training_stopped"]
    view._d = SimpleNamespace(trainer=SimpleNamespace(privacy=None))  # type: ignore[assignment]
    assert view.privacy() == {"enabled": False}
