"""A healthy federation's log is quiet: no ERROR, each condition at most once a window.

An operator running three organisations saw 2-5 libp2p ``Failed to open TCP stream``
ERRORs at every start, 8-12 while one peer was down, 118 ``heartbeat is stale``
warnings in 4 s after a restart and a ``leaked semaphore`` warning after a kill.
None of it was a fault. Here three real daemons start, one is killed (its process
only, as ``kill -9 PID`` does, leaving its helpers behind), stays down across
several windows and is restarted; every line all three wrote is then read back.

The repeat window is shortened from 60 s to ``WINDOW_S`` through
``FEDSWARM_LOG_REPEAT_WINDOW_S`` (docs/operations.md), so "at most one WARNING per
condition per minute" is checked as "per ``WINDOW_S``" in a test that stays short;
the peer is down for a real minute (eight windows), so a condition repeated through
the outage is seen being summarised, not merely lucky.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections import defaultdict
from pathlib import Path

import pytest
from fedswarm.daemon.demo.local_federation import LocalFederation, PeerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

WINDOW_S = 8.0
# A minute and a bit, as the operator's outage: longer than a heartbeat's 60 s maximum
# age, so what GossipSub queued for the dead peer is stale when it comes back.
DOWN_S = 65.0
# Timestamps are written with millisecond precision by another process's clock.
SLACK_S = 0.05

_VARIABLE = re.compile(r"12D3KooW\w+|\b[0-9a-f]{8,}\b|\d+(\.\d+)?")


def _condition(entry: dict[str, object]) -> tuple[str, str]:
    """Logger and message with peer ids, hashes and numbers blanked: one condition."""
    return str(entry.get("logger")), _VARIABLE.sub("#", str(entry.get("msg")))


def _read_log(path: Path) -> tuple[list[dict[str, object]], list[str]]:
    """JSON records, and any line that is not one (raw stderr of a helper process)."""
    records, raw = [], []
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            raw.append(line)
    return records, raw


def _ts(entry: dict[str, object]) -> float:
    return time.mktime(time.strptime(str(entry["ts"])[:19], "%Y-%m-%dT%H:%M:%S")) + float(
        "0" + str(entry["ts"])[19:-1]
    )


def _finished(peer: PeerProcess) -> int:
    status = peer.try_status()
    return int(status.get("last_finished_round", 0)) if status else -1


def _wait(predicate: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.5)
    return False


def test_start_outage_and_restart_log_no_error_and_each_warning_once_a_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDSWARM_LOG_REPEAT_WINDOW_S", str(WINDOW_S))
    fed = LocalFederation(tmp_path, peers=3, rounds=0, local_steps=2, batch_size=2,
                          round_deadline_s=20.0)
    fed.prepare()
    victim = fed.peers[2]
    try:
        fed.start()
        fed.wait_rounds(1, timeout_s=180)
        fed.kill_peer(victim)  # the process only: its resource tracker outlives it
        time.sleep(DOWN_S)
        before = max(_finished(p) for p in fed.peers[:2])
        fed.start_peer(victim)
        assert _wait(lambda: _finished(victim) >= before, 150), fed.log_tail(victim.org, 30)
        time.sleep(WINDOW_S)  # the restart's aftermath (queued heartbeats) has arrived
    finally:
        codes = fed.stop()
    assert all(code == 0 for code in codes.values()), codes

    errors: list[str] = []
    too_often: list[str] = []
    raw_lines: list[str] = []
    warnings = 0
    for peer in fed.peers:
        records, raw = _read_log(peer.log_path)
        raw_lines += [f"{peer.org}: {line}" for line in raw]
        by_condition: dict[tuple[str, str], list[float]] = defaultdict(list)
        for entry in records:
            level = str(entry.get("level"))
            if level in ("error", "critical"):
                errors.append(f"{peer.org}: {entry.get('logger')}: {entry.get('msg')}")
            elif level == "warning":
                warnings += 1
                by_condition[_condition(entry)].append(_ts(entry))
        for condition, stamps in by_condition.items():
            gaps = [b - a for a, b in itertools.pairwise(stamps)]
            if any(gap < WINDOW_S - SLACK_S for gap in gaps):
                too_often.append(f"{peer.org}: {condition}: {len(stamps)} lines, gaps {gaps}")
    print({"warning_lines": warnings, "errors": len(errors), "raw": len(raw_lines)})
    assert not errors, "\n".join(errors)
    assert not too_often, "\n".join(too_often)
    assert not raw_lines, "\n".join(raw_lines[:20])
