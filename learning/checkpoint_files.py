"""Crash-safe checkpoint directories.

Layout of a checkpoint root::

    root/LATEST            -> "round-000007"   (replaced atomically with os.replace)
    root/round-000007/     adapter/ (PEFT safetensors), trainer_state.pt, meta.json
    root/round-000006/     the previous one, kept until the next save succeeds

A save writes a hidden temp directory, fsyncs every file and the directory, renames it
to ``round-N``, fsyncs the root, and only then points ``LATEST`` at it. A ``kill -9`` at
any moment therefore leaves ``LATEST`` naming a complete, verified checkpoint. Each
file's sha256 is recorded in ``meta.json`` so that disk corruption is detected on load
instead of silently training from garbage.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedswarm.learning.errors import CheckpointError

LATEST = "LATEST"
META = "meta.json"
KEEP = 2


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != META)


def write_atomic_dir(target: Path, fill: Callable[[Path], None],
                     meta: dict[str, Any]) -> None:
    """Create ``target`` with contents written by ``fill(tmp_dir)``, all or nothing.

    ``target`` must not exist yet (callers use a fresh round name or remove it first).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        fill(tmp)
        files = _files(tmp)
        record = dict(meta)
        record["files"] = {str(p.relative_to(tmp)): _sha256(p) for p in files}
        (tmp / META).write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
        for p in [*files, tmp / META]:
            with p.open("rb") as f:
                os.fsync(f.fileno())
        for d in sorted({p.parent for p in files} | {tmp}, key=lambda d: -len(d.parts)):
            _fsync_dir(d)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def verify_dir(directory: Path) -> dict[str, Any]:
    """Return ``meta.json`` of a directory written by ``write_atomic_dir`` after checking
    every recorded file's hash; ``CheckpointError`` on anything missing or changed."""
    try:
        meta = json.loads((directory / META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{directory}: missing or unreadable {META}: {exc}") from exc
    files = meta.get("files")
    if not isinstance(files, dict) or not files:
        raise CheckpointError(f"{directory}: {META} lists no files")
    for name, digest in files.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{directory}: missing file {name}")
        if _sha256(path) != digest:
            raise CheckpointError(f"{directory}: file {name} is corrupt (sha256 mismatch)")
    return dict(meta)


def round_dir_name(round_number: int) -> str:
    return f"round-{round_number:06d}"


def publish_latest(root: Path, name: str) -> None:
    """Point ``LATEST`` at ``name`` atomically, then prune all but the newest ``KEEP``."""
    tmp = root / f".{LATEST}.tmp-{os.getpid()}"
    with tmp.open("w", encoding="utf-8") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / LATEST)
    _fsync_dir(root)
    rounds = sorted(p for p in root.glob("round-*") if p.is_dir())
    for old in rounds[:-KEEP]:
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    remove_stale_temporaries(root)


def remove_stale_temporaries(root: Path) -> None:
    """Delete temp dirs and ``LATEST`` temp files that a killed writer left in ``root``.

    ``write_atomic_dir`` and ``publish_latest`` clean up after themselves, except when
    the process dies mid-write (``kill -9``, power loss): then a hidden
    ``.round-N.tmp-*`` folder (a whole checkpoint's size) or ``.LATEST.tmp-PID`` stays
    behind, and a daemon that crashes repeatedly would fill its disk with them. One
    daemon writes a checkpoint root at a time, so after a successful publish every
    such leftover is garbage.
    """
    for stale in root.glob(".round-*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in root.glob(f".{LATEST}.tmp-*"):
        stale.unlink(missing_ok=True)


def latest_dir(root: Path) -> Path:
    """The directory ``LATEST`` names; ``CheckpointError`` if there is none."""
    try:
        name = (root / LATEST).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CheckpointError(f"{root}: no checkpoint here (no {LATEST} file)") from exc
    if not name.startswith("round-") or "/" in name:
        raise CheckpointError(f"{root}: {LATEST} is corrupt: {name!r}")
    return root / name


def has_checkpoint(root: Path) -> bool:
    """Whether ``root`` holds a checkpoint to resume from (cheap; no verification)."""
    return (Path(root) / LATEST).is_file()


def save_round(root: Path, round_number: int, fill: Callable[[Path], None],
               meta: dict[str, Any]) -> None:
    """Write round ``round_number``'s checkpoint under ``root`` and point ``LATEST`` at it.

    One place for every trainer (LoRA, FedKSeed, offsite member and owner): the directory
    is complete on disk before ``LATEST`` names it, and a full disk or a read-only
    folder is a ``CheckpointError``, which the daemon reports and survives.
    """
    name = round_dir_name(int(round_number))
    try:
        write_atomic_dir(root / name, fill, meta)
        publish_latest(root, name)
    except OSError as exc:
        raise CheckpointError(f"{root}: cannot write checkpoint: {exc}") from exc


def open_latest(root: Path, expected_format: int | str, kind: str) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint under ``root``, verified file by file, and its metadata.

    ``CheckpointError`` if there is none, a file is missing or changed, or it was written
    by another kind of trainer (``kind`` names the one expected, for the message).
    """
    path = latest_dir(Path(root))
    meta = verify_dir(path)
    if meta.get("format") != expected_format:
        raise CheckpointError(f"{path}: not {kind} checkpoint (format {meta.get('format')!r})")
    return path, meta
