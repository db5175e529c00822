"""The package manifest: the sha256 and size of every file a member receives.

The owner publishes the manifest's own sha256 (the *package id*) through the signed
roster or a signed message; a member accepts a package only if the manifest hashes to
that id, every listed file hashes to its entry, and no file is there that the manifest
does not list. A tampered, truncated or padded package is then refused by hash, before
torch ever parses a byte of it. No torch here: verification reads files only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from fedswarm.learning.errors import TamperedPackageError

MANIFEST_FILE = "offsite_manifest.json"
MANIFEST_FORMAT = 1
_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileEntry:
    name: str
    sha256: str
    size: int


def write_manifest(package_dir: Path) -> str:
    """Hash every file under ``package_dir`` into the manifest; returns the package id."""
    entries = [
        {
            "name": p.relative_to(package_dir).as_posix(),
            "sha256": file_sha256(p),
            "size": p.stat().st_size,
        }
        for p in sorted(package_dir.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILE
    ]
    body = json.dumps(
        {"format": MANIFEST_FORMAT, "files": entries}, indent=1, sort_keys=True
    ).encode()
    (package_dir / MANIFEST_FILE).write_bytes(body)
    return hashlib.sha256(body).hexdigest()


def read_manifest(package_dir: Path, expected_id: str | None = None) -> tuple[str, list[FileEntry]]:
    """The manifest's id and entries, checked against ``expected_id`` when given."""
    path = package_dir / MANIFEST_FILE
    try:
        body = path.read_bytes()
    except OSError as exc:
        raise TamperedPackageError(
            f"{package_dir}: no readable manifest ({exc.strerror})"
        ) from None
    package_id = hashlib.sha256(body).hexdigest()
    if expected_id is not None and package_id != expected_id:
        raise TamperedPackageError(
            f"{package_dir}: manifest hashes to {package_id[:16]}…, "
            f"the owner published {expected_id[:16]}…"
        )
    try:
        data = json.loads(body)
        entries = [
            FileEntry(str(e["name"]), str(e["sha256"]), int(e["size"])) for e in data["files"]
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise TamperedPackageError(f"{path}: malformed manifest ({exc})") from None
    if data.get("format") != MANIFEST_FORMAT:
        raise TamperedPackageError(
            f"{path}: manifest format {data.get('format')!r} (this version reads {MANIFEST_FORMAT})"
        )
    for entry in entries:
        if entry.name.startswith("/") or ".." in Path(entry.name).parts:
            raise TamperedPackageError(f"{path}: file name {entry.name!r} leaves the package")
    return package_id, entries


def verify_package_files(package_dir: Path, expected_id: str | None = None) -> str:
    """Check every file against the manifest (and nothing extra); returns the package id."""
    package_id, entries = read_manifest(package_dir, expected_id)
    listed = {e.name for e in entries}
    present = {
        p.relative_to(package_dir).as_posix()
        for p in package_dir.rglob("*")
        if p.is_file() and p.name != MANIFEST_FILE
    }
    if extra := sorted(present - listed):
        raise TamperedPackageError(f"{package_dir}: {extra[0]} is not in the manifest")
    for entry in entries:
        path = package_dir / entry.name
        if not path.is_file():
            raise TamperedPackageError(f"{package_dir}: {entry.name} is missing")
        if path.stat().st_size != entry.size or file_sha256(path) != entry.sha256:
            raise TamperedPackageError(
                f"{package_dir}: {entry.name} does not match its "
                "manifest hash (tampered or truncated)"
            )
    return package_id
