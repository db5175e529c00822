"""The systemd notify client against a real AF_UNIX datagram socket."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fedswarm.daemon.sdnotify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's notify socket."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def _receive(sock: socket.socket) -> str:
    return sock.recv(4096).decode("utf-8")


def test_each_state_change_arrives_as_its_own_datagram(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    notifier = Notifier(path)
    notifier.ready()
    notifier.status("round 3: aggregating")
    notifier.watchdog()
    notifier.reloading()
    notifier.stopping()
    received = [_receive(sock) for _ in range(5)]
    notifier.close()
    assert received == [
        "READY=1",
        "STATUS=round 3: aggregating",
        "WATCHDOG=1",
        "RELOADING=1",
        "STOPPING=1",
    ]


def test_multiline_status_is_sent_as_one_line(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier(path)
    notifier.status("first\nREADY=1")
    assert _receive(sock) == "STATUS=first READY=1"
    notifier.close()


def test_socket_path_is_read_from_notify_socket_env(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    notifier = Notifier()
    assert notifier.enabled
    notifier.ready()
    assert _receive(sock) == "READY=1"
    notifier.close()


def test_abstract_socket_named_with_at_sign_is_reached() -> None:
    name = f"fedswarm-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5)
    try:
        notifier = Notifier("@" + name)
        notifier.ready()
        assert _receive(sock) == "READY=1"
        notifier.close()
    finally:
        sock.close()


def test_notifier_without_socket_is_a_silent_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert notifier.send("READY=1") is False
    notifier.ready()
    notifier.status("x")
    notifier.watchdog()
    notifier.stopping()


def test_send_to_vanished_socket_reports_failure_without_raising(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    notifier = Notifier(path)
    assert notifier.send("READY=1") is True
    sock.close()
    os.unlink(path)
    assert notifier.send("WATCHDOG=1") is False
    notifier.watchdog()  # must not raise either
    notifier.close()


def test_send_to_full_socket_does_not_block(tmp_path: Path) -> None:
    """systemd not reading must never stall the daemon: the socket is non-blocking."""
    path = str(tmp_path / "full.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        notifier = Notifier(path)
        results = [notifier.send("WATCHDOG=1" + "x" * 2000) for _ in range(2000)]
        notifier.close()
    finally:
        sock.close()
    assert results[0] is True
    assert False in results  # the queue filled up and the send failed instead of blocking


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert Notifier.watchdog_interval_s() == 30.0


def test_watchdog_interval_applies_when_watchdog_pid_is_ours(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier.watchdog_interval_s() == 5.0


def test_watchdog_meant_for_another_pid_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier.watchdog_interval_s() is None


@pytest.mark.parametrize("value", [None, "", "0", "-5", "soon"])
def test_missing_or_bad_watchdog_usec_means_no_watchdog(
    value: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    if value is None:
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_USEC", value)
    assert Notifier.watchdog_interval_s() is None
