"""One daemon per state directory, enforced with an advisory file lock.

Two daemons on one state directory would interleave rounds in one SQLite database and
overwrite each other's checkpoints — a copied unit file or a second ``fedswarm run`` in
a terminal is enough to do it. ``fcntl.flock`` on ``state_dir/daemon.lock`` is held for
the daemon's whole life and released by the kernel when the process exits, however it
exits (``kill -9`` included), so a stale lock file never blocks a restart.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from .errors import StateError

LOCK_NAME = "daemon.lock"


class StateDirInUseError(StateError):
    """Another live process holds this state directory's lock."""


class StateDirLock:
    """Exclusive, non-blocking lock on a state directory; use as a context manager."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`StateDirInUseError` naming the holder's pid."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StateError(
                f"{self.path.parent}: cannot create state directory ({exc.strerror})"
            ) from None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(
                f"{self.path}: cannot create the state directory lock file ({exc.strerror})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise StateDirInUseError(
                f"{self.path.parent}: state directory is in use by another fedswarm daemon "
                f"({who}); each daemon needs its own [node] state_dir"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StateError(f"{self.path}: cannot lock ({exc.strerror})") from None
        # Record who holds it, for the error message of the next one to try. The pid is a
        # hint only: the lock itself is the kernel's, not the file's content.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> StateDirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
