"""The /metrics page: valid Prometheus text format, parsed by prometheus_client itself."""

from __future__ import annotations

import math

import pytest
from fedswarm.daemon.views.prometheus import (
    CONTENT_TYPE,
    MetricsSnapshot,
    escape_label_value,
    render_metrics,
)

parser = pytest.importorskip(
    "prometheus_client.parser", reason="prometheus_client is needed to parse the output"
)


def _snapshot(**overrides: object) -> MetricsSnapshot:
    values: dict[str, object] = {
        "state": "aggregating",
        "up_since": 1_700_000_000.5,
        "round": 12,
        "rounds_completed": 10,
        "rounds_aborted": 1,
        "train_loss": 2.5,
        "eval_loss": 2.75,
        "bytes_sent": 123_456_789,
        "bytes_received": 987_654_321,
        "peers_up": 3,
        "rejected_messages": {"bad_signature": 2, "unknown_peer": 5},
        "secagg_seconds_total": 41.25,
        "secagg_rounds_total": 10,
    }
    values.update(overrides)
    return MetricsSnapshot(**values)  # type: ignore[arg-type]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parser.text_string_to_metric_families(text)
        for s in family.samples
    }


def test_every_snapshot_field_is_exported_with_its_value() -> None:
    samples = _samples(render_metrics(_snapshot()))
    assert samples[("fedswarm_round", ())] == 12
    assert samples[("fedswarm_rounds_completed_total", ())] == 10
    assert samples[("fedswarm_rounds_aborted_total", ())] == 1
    assert samples[("fedswarm_train_loss", ())] == 2.5
    assert samples[("fedswarm_eval_loss", ())] == 2.75
    assert samples[("fedswarm_bytes_sent_total", ())] == 123_456_789
    assert samples[("fedswarm_bytes_received_total", ())] == 987_654_321
    assert samples[("fedswarm_peers_up", ())] == 3
    assert samples[("fedswarm_rejected_messages_total", (("reason", "bad_signature"),))] == 2
    assert samples[("fedswarm_rejected_messages_total", (("reason", "unknown_peer"),))] == 5
    assert samples[("fedswarm_secagg_seconds_total", ())] == 41.25
    assert samples[("fedswarm_secagg_rounds_total", ())] == 10
    assert samples[("fedswarm_state", (("state", "aggregating"),))] == 1
    assert samples[("fedswarm_start_time_seconds", ())] == 1_700_000_000.5


def test_every_family_has_help_and_type_and_counters_are_typed_counter() -> None:
    text = render_metrics(_snapshot())
    families = list(parser.text_string_to_metric_families(text))
    assert families
    for family in families:
        assert family.documentation, family.name
        assert family.name.startswith("fedswarm_")
    types = {f.name: f.type for f in families}
    assert types["fedswarm_bytes_sent"] == "counter"
    assert types["fedswarm_rejected_messages"] == "counter"
    assert types["fedswarm_peers_up"] == "gauge"
    help_lines = [line for line in text.splitlines() if line.startswith("# HELP ")]
    type_lines = [line for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(help_lines) == len(type_lines) == len(families)


def test_label_values_with_quotes_backslashes_and_newlines_round_trip() -> None:
    nasty = 'bad "sig"\\path\nsecond line'
    text = render_metrics(_snapshot(state=nasty, rejected_messages={nasty: 4}))
    assert "\nsecond line" not in text  # the newline was escaped, not written raw
    samples = _samples(text)
    assert samples[("fedswarm_rejected_messages_total", (("reason", nasty),))] == 4
    assert samples[("fedswarm_state", (("state", nasty),))] == 1


def test_escape_label_value_escapes_the_three_reserved_characters() -> None:
    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'


def test_unknown_losses_are_left_out_rather_than_reported_as_zero() -> None:
    text = render_metrics(_snapshot(train_loss=None, eval_loss=None))
    names = {name for name, _ in _samples(text)}
    assert "fedswarm_train_loss" not in names
    assert "fedswarm_eval_loss" not in names
    assert "fedswarm_round" in names


def test_non_finite_loss_is_written_in_prometheus_spelling() -> None:
    text = render_metrics(_snapshot(train_loss=math.inf, eval_loss=math.nan))
    assert "fedswarm_train_loss +Inf" in text
    assert "fedswarm_eval_loss NaN" in text
    samples = _samples(text)
    assert samples[("fedswarm_train_loss", ())] == math.inf
    assert math.isnan(samples[("fedswarm_eval_loss", ())])


def test_no_rejections_still_declares_the_family() -> None:
    text = render_metrics(_snapshot(rejected_messages={}))
    assert "# TYPE fedswarm_rejected_messages_total counter" in text
    assert "fedswarm_rejected_messages_total{" not in text


def test_output_ends_with_newline_and_content_type_names_text_format() -> None:
    assert render_metrics(_snapshot()).endswith("\n")
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("bytes_sent", -1),
        ("round", "3"),
        ("peers_up", True),
        ("secagg_seconds_total", math.nan),
        ("train_loss", "low"),
        ("rejected_messages", {"x": -2}),
        ("rejected_messages", {3: 1}),
    ],
)
def test_bad_snapshot_values_are_refused_with_the_field_named(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        _snapshot(**{field: value})


def test_eval_sets_are_exported_by_set_and_measure_only_when_configured() -> None:
    samples = _samples(render_metrics(_snapshot(
        eval_round=4, eval_scores=[("qa", "loss", 1.5), ("qa", "exact_match", 0.25),
                                   ('re"fuse', "refusal_rate", 0.75)])))
    assert samples[("fedswarm_eval_set_round", ())] == 4
    score = "fedswarm_eval_set_score"
    assert samples[(score, (("measure", "loss"), ("set", "qa")))] == 1.5
    assert samples[(score, (("measure", "exact_match"), ("set", "qa")))] == 0.25
    assert samples[(score, (("measure", "refusal_rate"), ("set", 're"fuse')))] == 0.75
    assert not any(name.startswith("fedswarm_eval_set") for name, _ in
                   _samples(render_metrics(_snapshot())))
