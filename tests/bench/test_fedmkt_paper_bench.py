"""bench.fedmkt's paper shape (issue #26) runs end to end at its smallest.

Slow (tens of seconds: three models, four arms); it guards the benchmark against rot,
not its numbers: the targets are measured at full size (docs/results.md).
"""

from __future__ import annotations

import math

import pytest

from bench.fedmkt import LARGE, PaperConfig, paper_benchmark

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_the_smallest_paper_run_reports_every_arm_and_ratio() -> None:
    config = PaperConfig(rounds=1, local_steps=2, distill_steps=2, private_count=8, public_count=6)
    result = paper_benchmark(config)
    params = result["parameters"]
    assert set(params) == {"town", "kitchen", "harbour"}
    assert all(params[LARGE] > 4 * params[n] for n in params if n != LARGE)
    assert set(result["eval_loss"]) == {"fedmkt", "public_only_alpha1", "local_only", "centralised"}
    for ratios in result["summary"].values():
        assert set(ratios) == {
            "own_domain_over_local", "union_over_local",
            "union_over_public_only", "union_over_centralised",
        }
        assert all(math.isfinite(v) and v > 0 for v in ratios.values())
    assert len(result["targets_met"]) == 3
