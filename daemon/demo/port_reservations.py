"""Loopback ports for local federations, reserved across processes on one machine.

A port that was free when ``bind(0)`` handed it out is free only until somebody else
binds it. One local federation picks two ports per daemon before any daemon starts, and
two federations started at once (the test suite's two workers, or a demo beside a test)
could pick the same free port: one daemon then failed to listen, and a test asked
another federation's libp2p port for its HTTP API ("BadStatusLine: /multistream/1.0.0").

Each port handed out is marked by a file named after it in a shared folder, created
with ``O_EXCL`` and holding the owner's pid; a port whose marker belongs to a live
process is not handed out again. Markers of dead processes are taken over. A marker
lives as long as its process: a long test session keeps a few hundred of 28,000
ephemeral ports.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from pathlib import Path

_ATTEMPTS = 200


def reservations_dir() -> Path:
    """The shared folder of markers (``FEDSWARM_PORTS_DIR`` overrides, for tests)."""
    root = os.environ.get("FEDSWARM_PORTS_DIR")
    return Path(root) if root else Path(tempfile.gettempdir()) / "fedswarm-ports"


def _owner_alive(marker: Path) -> bool:
    try:
        pid = int(marker.read_text().strip() or "0")
    except (OSError, ValueError):
        return True  # being written right now by its owner: not ours to take
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim(marker: Path) -> bool:
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        if _owner_alive(marker):
            return False
        with contextlib.suppress(FileNotFoundError):
            marker.unlink()  # a dead process's marker; the next attempt may take it
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(str(os.getpid()))
    return True


def reserve_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now and not reserved by another live process."""
    folder = reservations_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for _ in range(_ATTEMPTS):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if _claim(folder / str(port)):
            return port
    raise OSError(f"no free port on {host} after {_ATTEMPTS} tries")
