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
        is_member=lambda peer: True,
        up_members=lambda: ["me"],
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


def test_run_refuses_a_budget_that_cannot_cover_one_round(
        node_config: Path, run_cli: Callable[..., Any],
        one_line_error: Callable[..., str]) -> None:
    text = node_config.read_text()
    text = text.replace("# packing = true", "packing = false")
    text = text.replace("[privacy]\nenabled = false",
                        "[privacy]\nenabled = true\ntarget_epsilon = 0.1\nnoise_multiplier = 0.5")
    node_config.write_text(text)
    result = run_cli("run", "--config", str(node_config))
    one_line_error(result, "[privacy] target_epsilon = 0.1 cannot cover one round")


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
