"""Ctrl-C on ``fedswarm demo`` stops every daemon it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def daemon_pids(workdir: Path) -> list[int]:
    """PIDs of processes whose command line names a config inside ``workdir``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "fedswarm.daemon.cli run" in cmdline and str(workdir) in cmdline:
            pids.append(int(entry.name))
    return pids


def _sigint_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_stops_all_daemons(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    demo = subprocess.Popen(
        [sys.executable, "-m", "fedswarm.daemon.cli", "demo", "--peers", "3", "--rounds", "50",
         "--workdir", str(workdir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ),
        # Ctrl-C as a terminal delivers it: a suite started in the background (`cmd &` in a
        # script) passes SIGINT down as ignored, and Python then never raises
        # KeyboardInterrupt, so the demo would run on regardless of what it does with one
        preexec_fn=_sigint_as_in_a_terminal,
    )
    try:
        deadline = time.monotonic() + 300
        while len(daemon_pids(workdir)) < 3:
            assert demo.poll() is None, demo.stdout.read().decode() if demo.stdout else ""
            assert time.monotonic() < deadline, "daemons never started"
            time.sleep(0.5)
        time.sleep(3)
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 130
    output = demo.stdout.read().decode() if demo.stdout else ""
    # the folder the daemons leave (keys, logs) is named, not left behind silently
    assert f"their files and logs are in {workdir}" in output, output[-2000:]
    deadline = time.monotonic() + 10
    while daemon_pids(workdir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert daemon_pids(workdir) == []
