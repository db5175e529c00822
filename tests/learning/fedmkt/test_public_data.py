"""The public set is identified by a hash of its texts, not of its file bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fedswarm.learning.fedmkt.errors import PublicDataError, PublicDataHashMismatchError
from fedswarm.learning.fedmkt.public_data import PublicDataset, load_public_dataset


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_hash_ignores_json_formatting_but_not_content(tmp_path: Path) -> None:
    compact = _write(tmp_path / "a.jsonl", [json.dumps({"text": "héllo", "id": 1})])
    spaced = _write(tmp_path / "b.jsonl", ['{ "id": 1,   "text": "h\\u00e9llo" }', ""])
    changed = _write(tmp_path / "c.jsonl", [json.dumps({"text": "hello"})])
    first = load_public_dataset(compact)
    assert first.sha256 == load_public_dataset(spaced).sha256
    assert first.sha256 != load_public_dataset(changed).sha256
    assert first.texts == ("héllo",)


def test_text_order_changes_the_hash() -> None:
    assert (
        PublicDataset.from_texts(["a", "b"]).sha256 != PublicDataset.from_texts(["b", "a"]).sha256
    )
    assert PublicDataset.from_texts(["ab"]).sha256 != PublicDataset.from_texts(["a", "b"]).sha256


def test_expected_hash_mismatch_raises_specific_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", [json.dumps({"text": "x"})])
    good = load_public_dataset(path).sha256
    assert load_public_dataset(path, expected_sha256=good.upper()).sha256 == good
    with pytest.raises(PublicDataHashMismatchError, match="differs"):
        load_public_dataset(path, expected_sha256="0" * 64)


@pytest.mark.parametrize(
    "line",
    ["not json", "[1, 2]", '{"body": "x"}', '{"text": 3}'],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, line: str) -> None:
    path = _write(tmp_path / "bad.jsonl", [json.dumps({"text": "ok"}), line])
    with pytest.raises(PublicDataError, match=r"bad\.jsonl:2"):
        load_public_dataset(path)


def test_missing_or_empty_file_raises_public_data_error(tmp_path: Path) -> None:
    with pytest.raises(PublicDataError):
        load_public_dataset(tmp_path / "absent.jsonl")
    with pytest.raises(PublicDataError, match="no examples"):
        load_public_dataset(_write(tmp_path / "empty.jsonl", [""]))
