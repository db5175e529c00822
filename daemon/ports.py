"""Check, before anything slow starts, that the daemon can listen where its config says.

Why a probe: py-libp2p logs "Failed to start TCP listener" and carries on with no
listener at all, and aiohttp's bind error surfaces only after the model has loaded
(tens of seconds). Binding each address once up front turns both into one line in
about a second. The daemon checks again when it really listens (the port may be
taken in between); this probe only makes the common case fast and clear.
"""

from __future__ import annotations

import errno
import socket

from .errors import ListenError

__all__ = ["probe_listen", "tcp_endpoint"]


def tcp_endpoint(listen: str) -> tuple[str, int] | None:
    """(host, port) of a ``/ip4|ip6/ADDR/tcp/PORT`` multiaddr; None for anything else."""
    parts = listen.strip("/").split("/")
    if len(parts) < 4 or parts[0] not in ("ip4", "ip6") or parts[2] != "tcp":
        return None
    try:
        return parts[1], int(parts[3])
    except ValueError:
        return None


def probe_listen(host: str, port: int, key: str) -> None:
    """Raise ``ListenError`` naming ``key`` if ``host:port`` cannot be bound for TCP now.

    Port 0 (any free port) always works and is not probed. SO_REUSEADDR is set as
    the real listeners set it, so a port left in TIME_WAIT by a stopped daemon is
    not mistaken for one in use.
    """
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(1)
        except OSError as exc:
            raise ListenError(f"{key}: cannot listen on {_where(host, port)}: "
                              f"{listen_problem(exc)}") from None


def listen_problem(exc: OSError) -> str:
    """Why a bind failed, in the operator's terms."""
    if exc.errno == errno.EADDRINUSE:
        return "port already in use (another fedswarm daemon, or another program)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "not an address of this machine"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    return exc.strerror or str(exc)


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
