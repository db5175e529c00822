"""A full disk under the SQLite state: a clear DiskFullError, and nothing already written lost.

The multi-process disk-full test (test_disk_full_and_unusable_files.py) fills a real tmpfs,
but which write meets the full disk first there is timing: SQLite can keep overwriting pages
it owns while a checkpoint needs new blocks. Here SQLite's own page limit makes the next page
allocation fail with SQLITE_FULL, the error a full disk gives, every time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fedswarm.daemon.errors import DiskFullError
from fedswarm.daemon.state import StateStore


def _cap_at_current_size(store: StateStore) -> None:
    db = store._db  # the limit is per connection: set it on the store's own
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")


def test_full_database_raises_disk_full_and_keeps_earlier_rows(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    store.begin_round(1)
    store.update_round(1, status="complete")
    _cap_at_current_size(store)
    with pytest.raises(DiskFullError, match="disk full while writing state") as caught:
        for step in range(100_000):  # a page holds a few dozen rows: fails long before
            store.add_event("step", {"round": 2, "step": step, "padding": "x" * 200})
    assert str(store.path) in str(caught.value)
    assert store.integrity_ok()
    assert [(r.round, r.status) for r in store.rounds()] == [(1, "complete")]
    assert store.last_finished_round() == 1


def test_store_writes_again_once_space_is_freed(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    _cap_at_current_size(store)
    with pytest.raises(DiskFullError):
        for step in range(100_000):
            store.add_step_metric(1, step, 1.0)
    store._db.execute("PRAGMA max_page_count = 1073741823")  # the operator frees space
    store.begin_round(1)
    store.update_round(1, status="complete")
    store.close()
    reopened = StateStore.open(tmp_path)
    assert reopened.integrity_ok()
    assert reopened.last_finished_round() == 1
