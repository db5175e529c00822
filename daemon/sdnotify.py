"""A tiny systemd notify client: tell the service manager how the daemon is doing.

Why not a library: the protocol is one datagram of ``KEY=value`` lines to the
AF_UNIX socket named by ``$NOTIFY_SOCKET``; a dependency for that is more risk
than code. Why it never raises: the daemon must run the same with or without
systemd (a developer's shell, a container, a test), so a missing or broken
socket is logged at debug level and otherwise ignored.

With ``Type=notify`` systemd waits for ``READY=1`` before it calls the unit
started; with ``WatchdogSec=`` it restarts the daemon when ``WATCHDOG=1``
pings stop. See ``sd_notify(3)`` and ``sd_watchdog_enabled(3)``.
"""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["Notifier"]

logger = logging.getLogger(__name__)

_NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
_WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
_WATCHDOG_PID_ENV = "WATCHDOG_PID"


class Notifier:
    """Sends state changes to systemd; a silent no-op when not run under systemd.

    ``socket_path`` overrides ``$NOTIFY_SOCKET`` (tests use it). A path starting
    with ``@`` names a Linux abstract socket, as systemd writes it.
    """

    def __init__(self, socket_path: str | None = None) -> None:
        path = socket_path if socket_path is not None else os.environ.get(_NOTIFY_SOCKET_ENV)
        self._address: str | bytes | None = _socket_address(path) if path else None
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify (the daemon runs under systemd)."""
        return self._address is not None

    def ready(self) -> None:
        """Startup finished: systemd may now start units ordered after this one."""
        self.send("READY=1")

    def status(self, text: str) -> None:
        """A one-line status shown by ``systemctl status`` (e.g. "round 12: aggregating")."""
        # A newline would start a new KEY=value assignment: keep the status one line.
        one_line = " ".join(text.splitlines())
        self.send(f"STATUS={one_line}")

    def watchdog(self) -> None:
        """Keep-alive ping; must arrive at least once per ``WatchdogSec``."""
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        """Shutdown began: systemd will not count the coming exit as a crash."""
        self.send("STOPPING=1")

    def reloading(self) -> None:
        """A SIGHUP reload began; call ``ready()`` again when it has finished."""
        self.send("RELOADING=1")

    def send(self, message: str) -> bool:
        """Send one raw notify message. Returns whether it was delivered; never raises."""
        if self._address is None:
            return False
        try:
            if self._socket is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                self._socket = sock
            self._socket.sendto(message.encode("utf-8"), self._address)
        except OSError as exc:
            logger.debug("sd_notify %r to %r failed: %s", message, self._address, exc)
            return False
        return True

    def close(self) -> None:
        """Release the socket. Later sends open a fresh one."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    @staticmethod
    def watchdog_interval_s() -> float | None:
        """How often to call ``watchdog()``, in seconds; None when no watchdog is armed.

        Half of ``$WATCHDOG_USEC``, as ``sd_watchdog_enabled(3)`` recommends, so one
        late ping does not get the daemon killed. ``$WATCHDOG_PID``, when set,
        must name this process: otherwise the watchdog is meant for another one
        (e.g. the parent that spawned us).
        """
        usec_text = os.environ.get(_WATCHDOG_USEC_ENV)
        if not usec_text:
            return None
        try:
            usec = int(usec_text)
        except ValueError:
            logger.debug("ignoring %s=%r: not an integer", _WATCHDOG_USEC_ENV, usec_text)
            return None
        if usec <= 0:
            return None
        pid_text = os.environ.get(_WATCHDOG_PID_ENV)
        if pid_text:
            try:
                pid = int(pid_text)
            except ValueError:
                logger.debug("ignoring watchdog: %s=%r is not a pid", _WATCHDOG_PID_ENV, pid_text)
                return None
            if pid != os.getpid():
                return None
        return usec / 1_000_000 / 2


def _socket_address(path: str) -> str | bytes:
    """Turn a ``$NOTIFY_SOCKET`` value into a ``sendto`` address.

    ``@name`` is an abstract socket: the kernel wants a leading NUL byte instead.
    """
    if path.startswith("@"):
        return b"\0" + path[1:].encode("utf-8")
    return path
