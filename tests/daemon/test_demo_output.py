"""What ``fedswarm demo`` prints: a build heartbeat, short round lines, words for numbers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fedswarm.daemon.demo.command import (
    CONSENSUS_TOLERANCE,
    consensus_note,
    final_averaging_rounds,
    keep_only_logs,
)
from fedswarm.daemon.demo.progress import RoundProgress, Ticker, progress_line, round_label


def _status(state: str, round: int, finished: int) -> dict[str, Any]:
    return {"state": state, "round": round, "last_finished_round": finished,
            "rounds_completed": finished}


def test_a_peer_training_round_one_says_round_one() -> None:
    """``r0/3 training`` read as "round 0"; the peer was in round 1."""
    assert round_label(_status("training", 1, 0), 3) == "round 1/3 training"
    assert round_label(_status("aggregating", 3, 2), 3) == "round 3/3 aggregating"
    assert round_label(_status("done", 3, 3), 3) == "done 3/3"
    assert round_label(_status("waiting_for_peers", 0, 0), 3) == "waiting for peers"
    assert round_label(None, 3) == "starting"


def test_six_peers_fit_on_one_short_line() -> None:
    statuses: list[dict[str, Any] | None] = [_status("training", 2, 1) for _ in range(4)]
    statuses += [_status("grouping", 2, 1), None]
    line = progress_line(statuses, 5)
    assert line == "round 2/5 grouping · round 2/5 training ×4 · starting"
    assert len(line) < 80


def test_phase_changes_are_throttled_but_the_last_state_is_printed() -> None:
    printed: list[str] = []
    progress = RoundProgress(3, printed.append, min_gap_s=60.0)
    progress.show([_status("training", 1, 0)])
    progress.show([_status("grouping", 1, 0)])
    progress.show([_status("aggregating", 1, 0)])
    assert len(printed) == 1 and printed[0].endswith("round 1/3 training")
    progress.finish()
    assert len(printed) == 2 and printed[1].endswith("round 1/3 aggregating")


def test_a_new_round_is_printed_at_once() -> None:
    printed: list[str] = []
    progress = RoundProgress(3, printed.append, min_gap_s=60.0)
    progress.show([_status("training", 1, 0), _status("training", 1, 0)])
    progress.show([_status("grouping", 1, 0), _status("training", 2, 1)])
    progress.show([_status("done", 3, 3), _status("done", 3, 3)])
    assert [line.split(" s  ")[1] for line in printed] == [
        "round 1/3 training ×2", "round 1/3 grouping · round 2/3 training", "done 3/3 ×2"]


def test_ticker_prints_the_latest_status_at_least_every_interval() -> None:
    printed: list[str] = []
    with Ticker("  building: ", printed.append, first="importing", interval_s=0.05) as ticker:
        time.sleep(0.2)
        ticker.update("pre-training step 7/300 (loss 3.10)")
        time.sleep(0.2)
    assert printed and printed[0].startswith("  building: importing (")
    assert any("pre-training step 7/300" in line for line in printed)
    count = len(printed)
    time.sleep(0.15)
    assert len(printed) == count  # stopped with the block


def test_averaging_only_rounds_come_on_top_of_training_rounds() -> None:
    """Six peers in groups of 3 need a 2-round averaging pass; it used to eat 2 of 3 rounds."""
    assert final_averaging_rounds(6, 3, "lora_avg") == 2
    assert final_averaging_rounds(3, 4, "lora_avg") == 0
    assert final_averaging_rounds(6, 3, "fedmkt") == 0


def test_consensus_note_says_what_the_difference_means() -> None:
    assert "same adapter" in consensus_note(0.0)
    assert "rounding" in consensus_note(CONSENSUS_TOLERANCE / 10)
    assert "different adapters" in consensus_note(0.0214)
    assert consensus_note(0.0, "K-vector") == "every peer holds the same K-vector"


def test_keep_only_logs_removes_everything_but_the_daemon_logs(tmp_path: Path) -> None:
    for peer in ("peer1", "peer2"):
        (tmp_path / peer / "state").mkdir(parents=True)
        (tmp_path / peer / "identity.key").write_text("secret")
        (tmp_path / peer / "daemon.log").write_text("{}\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("{}\n")
    assert keep_only_logs(tmp_path) == ["peer1/daemon.log", "peer2/daemon.log"]
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == ["peer1", "peer1/daemon.log", "peer2", "peer2/daemon.log"]


def test_fedmkt_peers_are_labelled_with_their_own_model(tmp_path: Path) -> None:
    """FedMKT's summary said nothing of which peer ran which model."""
    import json

    from fedswarm.daemon.demo.local_federation import LocalFederation
    from fedswarm.learning.demo_assets import MARKER

    dirs = []
    for variant, parameters, tokenizer in (("default", 319968, "byte_bpe"),
                                           ("small-unigram", 136640, "unigram")):
        directory = tmp_path / variant
        directory.mkdir()
        (directory / MARKER).write_text(json.dumps(
            {"variant": variant, "parameters": parameters, "tokenizer": tokenizer}))
        dirs.append(directory)
    federation = LocalFederation(tmp_path / "fed", 3, 1, mode="fedmkt")
    federation.model_dirs = dirs
    assert federation.model_label(0) == "default (320k parameters, byte_bpe tokenizer)"
    assert federation.model_label(1) == "small-unigram (137k parameters, unigram tokenizer)"
    assert federation.model_label(2) == federation.model_label(0)


def _summary(ok: bool, per_peer: list[dict[str, Any]], averaging: int = 2) -> dict[str, Any]:
    return {"ok": ok, "mode": "lora_avg", "peers": len(per_peer), "rounds": 3,
            "final_averaging_rounds": averaging, "per_peer": per_peer}


def _peer(org: str, start: float, end: float, done: int = 5, grouped: int = 5) -> dict[str, Any]:
    return {"org": org, "eval_loss_start": start, "eval_loss_end": end,
            "rounds_completed": done, "rounds_aggregated": grouped, "last_finished_round": done}


def test_failed_result_names_each_peer_and_what_went_wrong() -> None:
    from fedswarm.daemon.demo.command import result_line

    line = result_line(_summary(False, [_peer("a", 0.8, 0.7), _peer("b", 0.8, 0.81),
                                        _peer("c", 0.8, 0.7, done=4)]))
    assert line == "FAILED: b's eval loss did not fall; c did not finish"


def test_rotating_groups_explain_the_smaller_drop_and_lonely_rounds() -> None:
    from fedswarm.daemon.demo.command import rotating_groups_note

    peers = [_peer(f"org-{i}", 0.8, 0.7) for i in range(5)] + [
        _peer("b", 0.8, 0.7, grouped=2)]
    notes = rotating_groups_note(_summary(True, peers))
    assert "over all 6 domains" in notes[0] and "1/6" in notes[0]
    assert notes[1].startswith("note: b ran some rounds alone")
    assert rotating_groups_note(_summary(True, [_peer("a", 0.8, 0.7)] * 3, averaging=0)) == []
