"""bench.fedkseed runs end to end at its smallest and reports what the issue asks for.

Slow (about 45 s: five arms, two memory probes in child processes); it guards the
benchmark against rot, not its numbers: the targets are measured at full size.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.fedkseed import main

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_the_smallest_run_reports_bytes_memory_and_losses_with_members_identical(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.json"
    main(["--rounds", "1", "--steps", "2", "--k", "16", "--json", str(out),
          "--workdir", str(tmp_path / "work")])
    result = json.loads(out.read_text())
    summary = result["summary"]
    assert summary["members_bit_identical"] is True
    # K = 16 scalars (and Pro's 16 amplitudes) in float32, plus framing: far below 20 KB.
    assert 16 * 4 <= summary["bytes_per_member_round"] < 20_000
    assert summary["bytes_per_member_round_secure"] > summary["bytes_per_member_round"]
    assert 0 < summary["memory_ratio"] < 2
    assert set(summary["union_loss"]) == {"fedkseed", "fedkseed-secure", "fedkseed-local",
                                          "lora-forwards", "lora-wall"}
    assert all(math.isfinite(v) for v in summary["union_loss"].values())
    assert result["machine"]["versions"]["torch"]
    assert "targets:" in capsys.readouterr().out
