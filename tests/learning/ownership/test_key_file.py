"""The ownership key file: made 0600, refused when others can read it, never shown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fedswarm.learning.errors import OwnershipKeyError
from fedswarm.learning.ownership.keys import OwnershipKey, read_key_file, write_key_file


def test_a_new_key_file_is_owner_only_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "ownership.key"
    key = write_key_file(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert read_key_file(path) == key


def test_an_existing_key_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "ownership.key"
    key = write_key_file(path)
    with pytest.raises(OwnershipKeyError, match="already exists"):
        write_key_file(path)
    assert read_key_file(path) == key


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_readable_by_others_is_refused_naming_the_mode(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "ownership.key"
    write_key_file(path)
    path.chmod(mode)
    with pytest.raises(OwnershipKeyError, match=f"mode {mode:04o}.*chmod 600"):
        read_key_file(path)


def test_a_missing_key_file_says_where_keys_come_from(tmp_path: Path) -> None:
    with pytest.raises(OwnershipKeyError, match=r"not found.*fedswarm init"):
        read_key_file(tmp_path / "absent.key")


@pytest.mark.parametrize("content", ["", "fedswarm-ownership-key-v1\nzz\n",
                                     "fedswarm-ownership-key-v1\nabcd\n",
                                     "other-header\n" + "00" * 32 + "\n"])
def test_a_malformed_key_file_is_refused_without_echoing_it(tmp_path: Path,
                                                            content: str) -> None:
    path = tmp_path / "ownership.key"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(OwnershipKeyError) as info:
        read_key_file(path)
    assert "00" * 32 not in str(info.value)


def test_the_key_never_appears_in_its_repr() -> None:
    key = OwnershipKey(bytes(range(32)))
    assert bytes(range(32)).hex() not in repr(key)
    assert key.key_id in repr(key)
