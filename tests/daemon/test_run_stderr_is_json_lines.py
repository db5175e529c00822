"""Off a terminal, everything ``fedswarm run`` writes to stderr is a JSON line (``| jq`` works).

Also the end of a run with ``rounds = N``: ``after_rounds = "exit"`` exits 0 by itself.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def _finite_run(config: Path, after_rounds: str) -> None:
    """One short local round; a second roster member that never answers, so libp2p fails
    to dial it (py-libp2p's loggers are the ones that escaped as bare text)."""
    from fedswarm.p2p.identity import Identity
    from fedswarm.p2p.roster import Member, Roster

    roster_path = config.parent / "roster.toml"
    roster = Roster.load(roster_path)
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        closed = int(sock.getsockname()[1])
    absent = Identity.generate().peer_id
    roster.with_member(Member("absent-c", absent, (f"/ip4/127.0.0.1/tcp/{closed}",))).save(
        roster_path)
    document = tomllib.loads(config.read_text())
    # secure aggregation stays on: its HE worker process shares the daemon's stderr
    document["federation"].update(rounds=1, after_rounds=after_rounds)
    document["train"].update(local_steps=2, batch_size=2)
    config.write_text(tomli_w.dumps(document))


def test_run_off_a_terminal_writes_only_json_lines_and_exits_after_its_rounds(
    node_config: Path,
) -> None:
    _finite_run(node_config, "exit")
    env = {k: v for k, v in os.environ.items() if k not in ("FEDSWARM_LOG_FORMAT", "TQDM_DISABLE",
                                                            "HF_HUB_DISABLE_PROGRESS_BARS")}
    result = subprocess.run(
        [sys.executable, "-m", "fedswarm.daemon.cli", "run", "--config", str(node_config)],
        capture_output=True, text=True, timeout=300, env=dict(env, HF_HUB_OFFLINE="1"),
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = []
    for number, line in enumerate(result.stderr.splitlines(), start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"stderr line {number} is not JSON: {line!r}")
    messages = [r["msg"] for r in records]
    assert any("1 round done; exiting" in m for m in messages), messages
    assert not any("1 rounds" in m for m in messages), messages
    # The absent member's failed dials are libp2p records the quiet-log filter drops
    # (docs/operations.md, section 6); whatever libp2p does log must be JSON (above).
    assert not any("Failed to open TCP stream" in m for m in messages), messages
