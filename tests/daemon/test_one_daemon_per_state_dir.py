"""Two daemons must never share a state directory; a killed one must not block a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fedswarm.daemon.config import load_config
from fedswarm.daemon.state_lock import StateDirInUseError, StateDirLock

RunCli = Callable[..., subprocess.CompletedProcess[str]]  # the conftest fixtures' types
OneLineError = Callable[..., str]

HOLDER = """
import sys, time
from pathlib import Path
from fedswarm.daemon.state_lock import StateDirLock
lock = StateDirLock(Path(sys.argv[1]))
lock.acquire()
print("locked", flush=True)
time.sleep(120)
"""


@contextmanager
def lock_held_by_another_process(state_dir: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(state_dir)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_second_lock_on_one_state_dir_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    with StateDirLock(tmp_path), pytest.raises(StateDirInUseError, match=f"pid {os.getpid()}"):
        StateDirLock(tmp_path).acquire()
    with StateDirLock(tmp_path):  # released on exit: free again
        pass


def test_lock_of_a_killed_daemon_does_not_block_a_restart(tmp_path: Path) -> None:
    with lock_held_by_another_process(tmp_path) as holder:
        with pytest.raises(StateDirInUseError, match=f"pid {holder.pid}"):
            StateDirLock(tmp_path).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    deadline = time.monotonic() + 10
    lock = StateDirLock(tmp_path)
    while True:  # the kernel drops the lock with the process; no stale file blocks us
        try:
            lock.acquire()
            break
        except StateDirInUseError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    lock.release()


def test_run_refuses_a_state_dir_in_use_in_one_line(
    node_config: Path, run_cli: RunCli, one_line_error: OneLineError
) -> None:
    state_dir = load_config(node_config).state_dir
    with lock_held_by_another_process(state_dir) as holder:
        line = one_line_error(run_cli("run", "--config", str(node_config)),
                              str(state_dir), f"pid {holder.pid}")
    assert "in use by another fedswarm daemon" in line
    assert not (state_dir / "fedswarm.sqlite").exists(), "the second daemon touched the state"
