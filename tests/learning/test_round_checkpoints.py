"""Every trainer saves and opens its round checkpoints the same way (``checkpoint_files``):
``LATEST`` names only a complete directory, and a checkpoint of another kind is refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fedswarm.learning.checkpoint_files import latest_dir, open_latest, save_round
from fedswarm.learning.errors import CheckpointError


def _fill(text: str) -> Callable[[Path], None]:
    def fill(tmp: Path) -> None:
        (tmp / "state.txt").write_text(text)

    return fill


def test_the_newest_round_is_opened_with_its_metadata(tmp_path: Path) -> None:
    save_round(tmp_path, 1, _fill("one"), {"format": "kind-1", "round": 1})
    save_round(tmp_path, 2, _fill("two"), {"format": "kind-1", "round": 2})
    path, meta = open_latest(tmp_path, "kind-1", "a test")
    assert (path.name, meta["round"]) == ("round-000002", 2)
    assert (path / "state.txt").read_text() == "two"


def test_a_checkpoint_of_another_kind_is_refused_by_name(tmp_path: Path) -> None:
    save_round(tmp_path, 1, _fill("x"), {"format": "fedkseed-1", "round": 1})
    with pytest.raises(CheckpointError, match="not an offsite member checkpoint"):
        open_latest(tmp_path, "offsite-1", "an offsite member")


def test_a_changed_file_is_refused(tmp_path: Path) -> None:
    save_round(tmp_path, 1, _fill("x"), {"format": 1, "round": 1})
    (latest_dir(tmp_path) / "state.txt").write_text("tampered")
    with pytest.raises(CheckpointError, match="corrupt"):
        open_latest(tmp_path, 1, "a LoRA trainer's")


def test_a_folder_that_cannot_be_written_is_a_checkpoint_error(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "checkpoint"
    not_a_folder.write_text("a file where the checkpoint folder should be")
    with pytest.raises(CheckpointError, match="cannot write checkpoint"):
        save_round(not_a_folder, 1, _fill("x"), {"format": 1, "round": 1})
