"""The aggregator's upload spool: checked UPLOAD chunks on disk until the sum reads them.

Why: A may add a member's chunks to the sum only once that member's whole upload is in
(session._collect_uploads says why: masks come off whole vectors only). Kept in RAM,
those chunks were every upload still in flight (427 MB each at 80 M values), and the sum
they went into was a vector-sized matrix of its own. Spooled, A appends each chunk to
its sender's file as soon as it has passed every check, and once the survivor set is
fixed sums chunk index by chunk index from the files (``sum_window``): chunk i of every
contributor is read, added, serialised and sent to D before chunk i + 1 is read. A's
memory is then one chunk per contributor, whatever the length of the vector.

Files: one per member per round (``UploadSpool``) and one for A's own add_plain rows
(``RowSpool``), under random names, created ``O_EXCL | O_NOFOLLOW`` with mode 0o600 in
a directory of mode 0o700 that this user owns (``prepare_directory``). They hold
ciphertexts under D's key and A's own masked plaintext words, nothing A does not hold
anyway. The session removes them when its round ends, however it ends
(``RoundSpool.close``, in a ``finally``); a daemon clears what a crash left behind when
it starts (``remove_leftovers``). Any ``OSError`` becomes ``SpoolError``
(``SpoolFullError`` for ENOSPC or EDQUOT): the round ends for A, the daemon goes on.
Nothing is fsync'd: a spool lives as long as its round, and the page cache is not A's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import struct
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from fedswarm.secagg.accumulator import CiphertextAccumulator
from fedswarm.secagg.errors import (
    ContextMismatchError,
    MessageFormatError,
    SpoolError,
    SpoolFullError,
    VectorShapeError,
)
from fedswarm.secagg.wire import Buffer, Reader

SUFFIX = ".spool"
_LENGTH = struct.Struct(">I")  # the record layout is wire.Writer.blobs': count, then blobs
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def default_directory() -> Path:
    """The library's spool directory: a per-user fedswarm folder in the system temp dir."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"fedswarm-spool-{uid}"


def prepare_directory(directory: Path) -> Path:
    """Create directory with mode 0o700 if needed; refuse one that others could write to.

    A spool file is read back into the sum, so a directory another user can write to
    (a planted /tmp folder) could swap a file between write and read.
    """
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.stat()
    except OSError as exc:
        raise _spool_error(f"cannot create the spool directory {directory}", exc) from exc
    if not stat.S_ISDIR(info.st_mode):
        raise SpoolError(f"spool directory {directory} is not a directory")
    if (hasattr(os, "getuid") and info.st_uid != os.getuid()) or info.st_mode & 0o022:
        raise SpoolError(
            f"spool directory {directory} belongs to another user or others may write to "
            "it; refusing to spool uploads there"
        )
    return directory


def remove_leftovers(directory: Path) -> int:
    """Delete the spool files a crashed round left in directory; how many there were."""
    removed = 0
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for path in directory.glob(f"*{SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    return removed


def write_at(fd: int, data: Buffer, offset: int) -> int:
    """Write all of data at offset (pwrite may write less than asked); the new end."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
    return offset


def _spool_error(what: str, exc: OSError) -> SpoolError:
    if exc.errno in _DISK_FULL:
        return SpoolFullError(f"{what}: the disk is full ({exc.strerror})")
    return SpoolError(f"{what}: {exc.strerror or exc}")


class _SpoolFile:
    """One spool file: created exclusively, written and read at offsets, removed once.

    The session writes and reads from a worker thread (so a slow disk never stalls its
    event loop) and may remove the file from the loop when the round is cancelled: a
    lock keeps discard() from closing the descriptor under a write in flight, whose
    number the next open() could otherwise reuse.
    """

    def __init__(self, directory: Path, stem: str) -> None:
        self.path = directory / f"{stem}-{secrets.token_hex(8)}{SUFFIX}"
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL
        flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            self._fd: int | None = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise _spool_error(f"cannot create spool file {self.path}", exc) from exc
        self.size = 0
        self._lock = threading.Lock()

    def _fileno(self) -> int:
        if self._fd is None:
            raise SpoolError(f"spool file {self.path.name} was already removed")
        return self._fd

    def _write(self, parts: Sequence[Buffer]) -> None:
        with self._lock:
            fd, end = self._fileno(), self.size
            try:
                for part in parts:
                    end = write_at(fd, part, end)
            except OSError as exc:
                raise _spool_error(f"cannot write spool file {self.path}", exc) from exc
            self.size = end

    def _read(self, offset: int, length: int) -> bytes:
        with self._lock:
            try:
                data = os.pread(self._fileno(), length, offset)
            except OSError as exc:
                raise _spool_error(f"cannot read spool file {self.path}", exc) from exc
        if len(data) != length:
            raise SpoolError(f"spool file {self.path} is shorter than what was written to it")
        return data

    def discard(self) -> None:
        """Close and delete the file; safe to call again."""
        with self._lock:  # after a write or read in flight, never under it
            fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(OSError):
            self.path.unlink()


class UploadSpool(_SpoolFile):
    """One member's UPLOAD chunks: appended in index order, read back by index.

    Each chunk is one record laid out as ``wire.Writer.blobs`` writes it (a u32 count,
    then each ciphertext with its u32 length), so reading back is ``Reader.blob_views``:
    bounds-checked, and views into one read, not a copy per ciphertext.
    """

    def __init__(self, directory: Path, stem: str) -> None:
        super().__init__(directory, stem)
        self._offsets: list[int] = []

    @property
    def chunks(self) -> int:
        return len(self._offsets)

    def append(self, ciphertexts: Sequence[Buffer]) -> None:
        parts: list[Buffer] = [_LENGTH.pack(len(ciphertexts))]
        for ciphertext in ciphertexts:
            parts.append(_LENGTH.pack(len(ciphertext)))
            parts.append(ciphertext)
        start = self.size
        self._write(parts)
        self._offsets.append(start)

    def read(self, index: int) -> list[memoryview]:
        if not 0 <= index < len(self._offsets):
            raise SpoolError(f"chunk {index} was never spooled ({len(self._offsets)} were)")
        start = self._offsets[index]
        stop = self._offsets[index + 1] if index + 1 < len(self._offsets) else self.size
        reader = Reader(self._read(start, stop - start), "spooled upload chunk")
        try:
            views = reader.blob_views()
            reader.finish()
        except MessageFormatError as exc:
            raise SpoolError(f"spool file {self.path} changed on disk: {exc}") from exc
        return views


class RowSpool(_SpoolFile):
    """A's own add_plain rows (plain_add): one fixed-width uint64 row per ciphertext."""

    def __init__(self, directory: Path, stem: str, row_words: int) -> None:
        super().__init__(directory, stem)
        self.row_words = row_words
        self.rows = 0

    def write(self, first_row: int, rows: np.ndarray) -> None:
        """Rows first_row.. (segments come in order, so the file only ever grows)."""
        if first_row != self.rows or rows.dtype != np.uint64 or rows.ndim != 2 or (
            rows.shape[1] != self.row_words
        ):
            raise VectorShapeError(
                f"plain rows {rows.dtype} {rows.shape} at row {first_row}; expected uint64 "
                f"rows of {self.row_words} words from row {self.rows}"
            )
        self._write([np.ascontiguousarray(rows, dtype="<u8").data.cast("B")])
        self.rows += len(rows)

    def read(self, first: int, stop: int) -> np.ndarray:
        if not 0 <= first <= stop <= self.rows:
            raise SpoolError(f"plain rows {first}..{stop} were never spooled ({self.rows} were)")
        row_bytes = 8 * self.row_words
        data = self._read(first * row_bytes, (stop - first) * row_bytes)
        return np.frombuffer(data, dtype="<u8").reshape(stop - first, self.row_words)


class RoundSpool:
    """Every spool file A keeps in one round; close() removes them all.

    ``label`` starts every file name (the round), so leftovers can be told apart. Files
    are created from a worker thread and removed from the loop: once closed, no new file
    is created (a lock orders the two), so none can appear after close().
    """

    def __init__(self, directory: Path, label: str) -> None:
        self.directory = prepare_directory(directory)
        self._label = label
        self._uploads: dict[str, UploadSpool] = {}
        self._own: RowSpool | None = None
        self._opened = 0
        self._closed = False
        self._lock = threading.Lock()

    @property
    def members(self) -> tuple[str, ...]:
        """Members with a spooled upload, complete or not."""
        return tuple(self._uploads)

    def paths(self) -> list[Path]:
        """The files this round holds now (tests look for leftovers with these)."""
        own = [self._own.path] if self._own is not None else []
        return [spool.path for spool in self._uploads.values()] + own

    def _stem(self, kind: str) -> str:
        self._opened += 1
        return f"{self._label}-{kind}{self._opened:04d}"

    def append(self, member: str, index: int, ciphertexts: Sequence[Buffer]) -> None:
        """Chunk index of member's upload, after it has passed every check."""
        with self._lock:
            if self._closed:
                raise SpoolError("the round's spool is closed")
            spool = self._uploads.get(member)
            if spool is None:
                spool = self._uploads[member] = UploadSpool(self.directory, self._stem("upload"))
        if index != spool.chunks:  # the inbox hands chunks over in order, each once
            raise SpoolError(f"chunk {index} of an upload that has {spool.chunks} spooled")
        spool.append(ciphertexts)

    def read(self, member: str, index: int) -> list[memoryview]:
        spool = self._uploads.get(member)
        if spool is None:
            raise SpoolError(f"no upload of {member!r} was spooled")
        return spool.read(index)

    def chunks(self, member: str) -> int:
        spool = self._uploads.get(member)
        return 0 if spool is None else spool.chunks

    def drop(self, member: str) -> None:
        """Remove member's upload: it stopped, broke or failed a check (a dropout)."""
        with self._lock:
            spool = self._uploads.pop(member, None)
        if spool is not None:
            spool.discard()

    def own_rows(self, row_words: int) -> RowSpool:
        with self._lock:
            if self._closed:
                raise SpoolError("the round's spool is closed")
            if self._own is None:
                self._own = RowSpool(self.directory, self._stem("own"), row_words)
            return self._own

    def read_own_rows(self, first: int, stop: int) -> np.ndarray:
        if self._own is None:
            raise SpoolError("A's own contribution was never spooled")
        return self._own.read(first, stop)

    def close(self) -> None:
        """Remove every file of this round; safe to call again."""
        with self._lock:
            self._closed = True
            files: list[_SpoolFile] = [*self._uploads.values()]
            if self._own is not None:
                files.append(self._own)
            self._uploads.clear()
            self._own = None
        for spool in files:
            spool.discard()


def sum_window(
    accumulator: CiphertextAccumulator,
    spool: RoundSpool,
    index: int,
    first: int,
    stop: int,
    uploads: Sequence[str],
    own_rows: bool,
) -> CiphertextAccumulator:
    """The sum of ciphertexts first..stop-1 (SUM chunk index) from the spool.

    A's own rows (own_rows: raw-readable contexts) and chunk index of every upload, each
    checked word by word again as it is added: the file was outside the process.
    """
    window = accumulator.window(first, stop)
    if own_rows:
        window.add_plain(spool.read_own_rows(first, stop), first)
    for member in uploads:
        chunk = spool.read(member, index)
        try:
            window.add(chunk)
        except (MessageFormatError, VectorShapeError, ContextMismatchError) as exc:
            raise SpoolError(
                f"the spooled upload of {member!r} changed on disk (chunk {index}): {exc}"
            ) from exc
        del chunk
    return window
