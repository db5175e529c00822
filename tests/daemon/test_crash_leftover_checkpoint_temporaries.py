"""A writer killed mid-checkpoint leaves hidden temporaries; the next publish removes them.

Found by the kill -9 loop (test_crash_kill9_loop.py): each kill mid-checkpoint left a
whole ``.round-N.tmp-*`` folder behind, so a daemon that crashes often fills its disk.
"""

from __future__ import annotations

from pathlib import Path

from fedswarm.learning.checkpoint_files import (
    latest_dir,
    publish_latest,
    round_dir_name,
    verify_dir,
    write_atomic_dir,
)


def fill(tmp: Path) -> None:
    (tmp / "adapter.bin").write_bytes(b"\x01" * 64)


def test_publish_removes_what_a_killed_writer_left(tmp_path: Path) -> None:
    write_atomic_dir(tmp_path / round_dir_name(1), fill, {"round": 1})
    publish_latest(tmp_path, round_dir_name(1))
    # What kill -9 leaves: a half-written checkpoint folder and a LATEST temp file.
    half = tmp_path / ".round-000002.tmp-abc123"
    half.mkdir()
    (half / "adapter.bin").write_bytes(b"\x02" * 10)
    (tmp_path / ".LATEST.tmp-4242").write_text("round-000002\n")
    keep = tmp_path / "operator-notes.txt"  # not ours: must survive
    keep.write_text("hands off")

    write_atomic_dir(tmp_path / round_dir_name(2), fill, {"round": 2})
    publish_latest(tmp_path, round_dir_name(2))

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "LATEST", "operator-notes.txt", "round-000001", "round-000002"
    ]
    assert verify_dir(latest_dir(tmp_path))["round"] == 2
