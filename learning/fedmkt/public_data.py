"""The public data set every FedMKT peer holds, identified by a content hash.

Knowledge is exchanged per public example, by index; two peers holding slightly
different files would align example 3 of one with example 3 of the other and learn
nonsense. The hash is over the *texts* (canonical bytes), not the file, so a re-saved
file with other key order or whitespace still matches.
"""

from __future__ import annotations

import hashlib
import json
import struct
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedswarm.learning.fedmkt.errors import PublicDataError, PublicDataHashMismatchError

#: Public files larger than this are refused: it is loaded whole into memory.
MAX_PUBLIC_FILE_BYTES = 512 * 1024 * 1024


def canonical_bytes(texts: Sequence[str]) -> bytes:
    """Texts as NFC-normalised UTF-8, each prefixed by its 8-byte big-endian length.

    Length prefixes make the encoding unambiguous (no separator can occur in a text).
    """
    parts: list[bytes] = [b"fedswarm-public-v1", struct.pack(">Q", len(texts))]
    for text in texts:
        data = unicodedata.normalize("NFC", text).encode("utf-8")
        parts.append(struct.pack(">Q", len(data)))
        parts.append(data)
    return b"".join(parts)


def content_sha256(texts: Sequence[str]) -> str:
    """Hex sha256 of :func:`canonical_bytes`."""
    return hashlib.sha256(canonical_bytes(texts)).hexdigest()


@dataclass(frozen=True)
class PublicDataset:
    """Public texts in file order plus their content hash."""

    texts: tuple[str, ...]
    sha256: str

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> PublicDataset:
        normalised = tuple(unicodedata.normalize("NFC", t) for t in texts)
        return cls(texts=normalised, sha256=content_sha256(normalised))

    def __len__(self) -> int:
        return len(self.texts)

    def check_sha256(self, expected: str) -> None:
        """Raise :class:`PublicDataHashMismatchError` unless the hash is ``expected``."""
        if self.sha256 != expected.strip().lower():
            raise PublicDataHashMismatchError(
                f"public data set hash {self.sha256} differs from the agreed {expected}"
            )


def load_public_dataset(path: Path | str, expected_sha256: str | None = None) -> PublicDataset:
    """Read a JSONL file whose lines are objects with a string ``text`` field.

    Blank lines are skipped. With ``expected_sha256`` a mismatch raises
    :class:`PublicDataHashMismatchError`.
    """
    file = Path(path)
    try:
        size = file.stat().st_size
    except OSError as exc:
        raise PublicDataError(f"cannot read public data set {file}: {exc}") from exc
    if size > MAX_PUBLIC_FILE_BYTES:
        raise PublicDataError(f"public data set {file} is {size} bytes, over the limit")
    try:
        raw = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PublicDataError(f"cannot read public data set {file}: {exc}") from exc
    texts: list[str] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PublicDataError(f"{file}:{number}: not valid JSON: {exc.msg}") from exc
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise PublicDataError(f"{file}:{number}: expected an object with a string 'text'")
        texts.append(record["text"])
    if not texts:
        raise PublicDataError(f"public data set {file} has no examples")
    dataset = PublicDataset.from_texts(texts)
    if expected_sha256 is not None:
        dataset.check_sha256(expected_sha256)
    return dataset
