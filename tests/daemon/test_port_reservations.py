"""Local federations started at once never share a loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fedswarm.daemon.demo.port_reservations import _claim, reserve_port


@pytest.fixture
def ports_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "ports"
    monkeypatch.setenv("FEDSWARM_PORTS_DIR", str(folder))
    return folder


def test_a_port_reserved_by_a_live_process_is_not_handed_out_again(ports_dir: Path) -> None:
    first = reserve_port()
    assert (ports_dir / str(first)).read_text() == str(os.getpid())
    taken = {first} | {reserve_port() for _ in range(50)}
    assert len(taken) == 51  # one process never gets a port twice


def test_a_port_reserved_by_another_live_process_is_skipped(ports_dir: Path) -> None:
    ports_dir.mkdir()
    marker = ports_dir / "45678"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        marker.write_text(str(other.pid))
        assert not _claim(marker)
        assert marker.read_text() == str(other.pid)  # still the other process's
    finally:
        other.kill()
        other.wait()


def test_a_dead_process_marker_is_taken_over(ports_dir: Path) -> None:
    ports_dir.mkdir()
    marker = ports_dir / "45679"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    marker.write_text(str(dead.pid))
    assert not _claim(marker)  # the dead owner's marker is cleared ...
    assert _claim(marker)  # ... and the next attempt takes the port
    assert marker.read_text() == str(os.getpid())
