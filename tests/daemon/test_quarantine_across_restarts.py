"""End to end: ``fedswarm run`` with a rules screen, stopped and started again.

One member (its round is local only), one round of one step. The first run drops the bad
rows and writes each to quarantine.jsonl with file:line and reason; the restart screens
the same file again (its quality screen under round 1's adapter), writes nothing new, and
its /api/status counts the same drops. The
same run scores an ``[eval]`` set after its round, and the restarted daemon still serves
that round's scores at /api/evaluation.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import tomli_w

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

GOOD = [f"the ledger balanced on day {i}" for i in range(12)]
# line number -> (row text, the reason's words)
BAD = {
    3: ("a forbidden recipe", "contains word 'forbidden'"),
    8: ("ok", "shorter than min_chars=5 (2 characters)"),
    12: ("FORBIDDEN again", "contains word 'forbidden'"),
}


def _configure(config: Path, after_rounds: str) -> Path:
    rows = list(GOOD)
    for line, (text, _) in sorted(BAD.items()):
        rows.insert(line - 1, text)
    train = config.parent / "train.jsonl"
    train.write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    (config.parent / "eval.jsonl").write_text('{"text": "good evening ledger"}\n' * 2)
    (config.parent / "qa.jsonl").write_text(
        "".join(
            json.dumps({"instruction": f"Name day {i}.", "output": f"day {i}"}) + "\n"
            for i in range(3)
        )
    )
    document = tomllib.loads(config.read_text())
    document["federation"].update(
        rounds=1, after_rounds=after_rounds, round_deadline_s=1.0, secure_aggregation="none"
    )
    document["train"].update(local_steps=1, batch_size=2, samples_per_round=0)
    # loss_outlier_mads = 1e6: the quality screen runs (and says whose adapter it scored
    # with) but cannot drop any of these near-identical rows, so the counts are the rules'
    document["data"].update(
        train_path=str(train),
        eval_path="eval.jsonl",
        packing=False,
        screen={"words": ["forbidden"], "min_chars": 5, "loss_outlier_mads": 1e6},
    )
    document["eval"] = {"sets": ["qa.jsonl"], "max_new_tokens": 4}
    config.write_text(tomli_w.dumps(document))
    return train


def _command(config: Path) -> list[str]:
    return [sys.executable, "-m", "fedswarm.daemon.cli", "run", "--config", str(config)]


def _get(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def _report(state: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (state / "quarantine.jsonl").read_text().splitlines()]


def test_each_dropped_row_is_reported_once_and_counted_after_a_restart(
    node_config: Path,
) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    train = _configure(node_config, after_rounds="exit")
    state = node_config.parent / "state"
    first = subprocess.run(
        _command(node_config),
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    expected = sorted((str(train), line, reason) for line, (_, reason) in BAD.items())
    reported = sorted((e["file"], e["line"], e["reason"]) for e in _report(state))
    assert reported == expected
    assert all(e["screen"] == "rules" and e["excerpt"] == "" for e in _report(state))

    _configure(node_config, after_rounds="serve")  # the round is done: restart and serve
    (state / "api.url").unlink()
    token = (node_config.parent / "api.token").read_text().strip()
    daemon = subprocess.Popen(
        _command(node_config),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while not (state / "api.url").is_file():
            assert daemon.poll() is None, daemon.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the restarted daemon never served its API"
            time.sleep(0.2)
        url = (state / "api.url").read_text().strip()
        status = _get(url + "/api/status", token)
        evaluation = _get(url + "/api/evaluation", token)
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, stderr[-3000:]
    screen = status["screen"]
    assert (screen["rows_checked"], screen["rows_kept"], screen["rows_dropped"]) == (15, 12, 3)
    assert screen["dropped_by_screen"] == {"rules": 3}
    assert (screen["newly_reported"], screen["report_entries"]) == (0, 3)
    # the quality screen scored the restart's rows under round 1's adapter, not a fresh one
    assert screen["scored_with_round"] == 1
    assert "scored rows with the adapter of round" not in first.stderr
    assert sorted((e["file"], e["line"], e["reason"]) for e in _report(state)) == expected
    # the round's [eval] scores were kept in the database and survive the restart
    assert evaluation["enabled"] is True
    assert [(r["round"], r["name"], r["rows"]) for r in evaluation["results"]] == [(1, "qa", 3)]
    qa = evaluation["results"][0]
    assert qa["loss"] > 0 and 0 <= qa["exact_match"] <= 1 and 0 <= qa["rouge_l"] <= 1
