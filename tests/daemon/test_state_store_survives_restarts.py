"""The SQLite state: schema versioning, round log, rollback of interrupted rounds."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from fedswarm.daemon.errors import StateError
from fedswarm.daemon.state import SCHEMA_VERSION, StateStore


def test_new_store_is_at_current_schema_in_wal_mode(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    assert store.schema_version() == SCHEMA_VERSION
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert store.integrity_ok()


def test_round_log_round_trips_json_columns(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    store.begin_round(1)
    store.update_round(1, status="complete", members=["a", "b", "c"], eval_loss_after=1.5)
    (record,) = store.rounds()
    assert record.members == ["a", "b", "c"]
    assert record.status == "complete"
    assert store.last_finished_round() == 1


def test_interrupted_round_is_rolled_back_on_reopen(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    store.begin_round(1)
    store.update_round(1, status="complete")
    store.begin_round(2)
    store.close()
    reopened = StateStore.open(tmp_path)
    assert reopened.mark_interrupted_rounds() == [2]
    assert reopened.last_finished_round() == 1
    assert [r.status for r in reopened.rounds()] == ["complete", "rolled_back"]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    StateStore.open(tmp_path).close()
    db = sqlite3.connect(tmp_path / "fedswarm.sqlite")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(StateError, match="newer fedswarm"):
        StateStore.open(tmp_path)


def test_unknown_round_field_is_a_programming_error(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    store.begin_round(1)
    with pytest.raises(ValueError, match="unknown round fields"):
        store.update_round(1, colour="blue")


def test_rejections_are_counted_by_kind(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    store.add_rejection("peer-x", "plain-update", "update contains NaN or Inf")
    store.add_rejection("peer-y", "plain-update", "wrong size")
    store.add_rejection(None, "gossip", "bad signature")
    assert store.rejection_counts() == {"plain-update": 2, "gossip": 1}
    assert store.rejections()[0]["reason"] == "bad signature"


def test_unwritable_state_directory_is_a_state_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StateError, match="cannot create state directory"):
        StateStore.open(blocker / "state")


def test_status_counts_cover_the_whole_log_not_a_window(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    for n in range(1, 1206):
        store.begin_round(n)
        store.update_round(n, status="complete" if n % 5 else "aborted", protocol="p",
                           aggregate_s=0.5)
    assert len(store.rounds()) == 1000
    assert store.round_status_counts() == {"complete": 964, "aborted": 241}
    assert store.secure_aggregation_totals("p") == (1205, 602.5)


def test_recorded_events_are_read_back_after_reopen_oldest_first(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    store.add_event("fedmkt", {"round": 1, "edges": []})
    store.add_event("other", {"x": 1})
    store.add_event("fedmkt", {"round": 2, "edges": [["a", "b"]]})
    store.close()
    reopened = StateStore.open(tmp_path)
    assert reopened.events_of_kind("fedmkt") == [
        {"round": 1, "edges": []},
        {"round": 2, "edges": [["a", "b"]]},
    ]
    assert reopened.events_of_kind("fedmkt", limit=1) == [{"round": 2, "edges": [["a", "b"]]}]


def test_round_checkpointed_before_a_crash_is_recovered_not_rolled_back(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    store.begin_round(1)
    store.update_round(1, status="complete")
    store.begin_round(2)  # crash after round 2's checkpoint, before its record
    store.close()
    reopened = StateStore.open(tmp_path)
    assert reopened.mark_interrupted_rounds() == [2]
    assert reopened.mark_recovered(2) is True
    assert reopened.mark_recovered(1) is False  # a complete round is left alone
    record = reopened.round_record(2)
    assert record is not None and record.status == "recovered"
    assert reopened.last_finished_round() == 2
    assert reopened.round_record(7) is None
