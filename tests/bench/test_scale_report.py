"""bench.scale's judgement of a run: spread between daemons and the per-round table."""

from __future__ import annotations

import numpy as np
import pytest

from bench.scale import _round_table, relative_spread


def test_identical_adapters_have_zero_spread_and_one_outlier_sets_it() -> None:
    base = np.array([0.5, -2.0, 1.0], dtype=np.float32)
    assert relative_spread([base, base.copy(), base.copy()]) == 0.0
    off = base.copy()
    off[1] += 0.002  # 1e-3 of the largest |value| (2.0)
    assert relative_spread([base, base.copy(), off]) == pytest.approx(1e-3, rel=1e-3)


def test_round_table_counts_statuses_abort_reasons_and_bytes_per_daemon() -> None:
    def record(status: str, start: float, end: float, sent: int, note: str | None = None):
        return {"round": 1, "status": status, "started_at": start, "finished_at": end,
                "train_s": 1.0, "aggregate_s": 2.0, "apply_s": 0.5, "bytes_sent": sent,
                "bytes_received": 1000, "note": note}

    logs = [
        [record("complete", 100.0, 110.0, 3000)],
        [record("complete", 101.0, 112.5, 5000)],
        [record("aborted", 100.5, 130.0, 1000, note="aggregator left")],
    ]
    (row,) = _round_table(logs, rounds=2)  # round 2 has no records: left out
    assert row["statuses"] == {"complete": 2, "aborted": 1}
    assert row["wall_s"] == 30.0
    assert row["bytes_per_daemon"] == 4000  # mean of 4 000, 6 000 and 2 000
    assert row["abort_reasons"] == ["aggregator left"]
    assert row["aggregate_s"] == 2.0


def test_usage_is_read_per_process_group_in_one_pass() -> None:
    import subprocess
    import sys
    import time

    from bench.scale import Watcher

    code = "import time; x = bytearray(50_000_000); time.sleep(5)"
    child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        time.sleep(1.5)
        watcher = Watcher(federation=None)  # type: ignore[arg-type]  # only /proc is read
        watcher._read_usage({child.pid: 0, 2**22 + 7: 1})  # a group with no process
        assert watcher.usage[0].peak_private_mb >= 45  # its 50 MB, counted as its own
        assert watcher.usage[1].peak_private_mb == 0 and watcher.usage[1].cpu_s == 0
    finally:
        child.kill()
        child.wait()


def test_rounds_a_catch_up_skipped_count_as_recorded_and_a_plain_gap_does_not() -> None:
    from bench.netns_federation import rounds_without_a_record

    caught_up = [(0, "initial"), (1, "aborted"), (4, "caught_up"), (5, "complete")]
    assert rounds_without_a_record(caught_up) == []  # one caught_up row covers 2-4
    gap = [(0, "initial"), (1, "complete"), (4, "complete"), (5, "in_progress")]
    assert rounds_without_a_record(gap) == [2, 3]
    assert rounds_without_a_record([(0, "initial")]) == []
