"""Exceptions raised by the daemon layer.

Each names one thing that went wrong so the CLI can turn it into a one-line
message and an exit code, instead of a traceback.
"""

from __future__ import annotations


class DaemonError(Exception):
    """Base class for errors raised by ``fedswarm.daemon``."""


class ConfigError(DaemonError):
    """The configuration is invalid. The message names the key (or file) and the problem."""


class StateError(DaemonError):
    """The state directory or its SQLite database cannot be used."""


class DiskFullError(StateError):
    """A write to the state directory failed because the disk is full.

    Raised instead of a bare ``OSError`` so the round can be rolled back and the
    previous checkpoint kept.
    """


class DemoError(DaemonError):
    """``fedswarm demo`` could not complete."""


class NetworkLayerEndedError(DaemonError):
    """The p2p layer's thread ended while the daemon was not stopping.

    The daemon then exits non-zero rather than run on deaf: systemd's
    ``Restart=on-failure`` starts it again, and state and checkpoints are on disk.
    """


class ListenError(DaemonError):
    """A port the daemon must listen on is taken or unusable.

    The daemon refuses to run without its libp2p listener (peers could not reach it)
    or its API (the operator could not see it); the message names the key to change.
    """
