"""An HE pool worker does not outlive a daemon killed with SIGKILL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

PARENT = """
import os, pathlib, signal, sys
from fedswarm.secagg.he import make_executor
pool = make_executor(1)
pathlib.Path(sys.argv[1]).write_text(str(pool.submit(os.getpid).result(timeout=120)))
os.kill(os.getpid(), signal.SIGKILL)
"""


def alive(pid: int) -> bool:
    """Running or sleeping; a zombie waiting to be reaped counts as gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux")
def test_worker_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "worker.pid"
    # No pipes: a surviving worker would inherit them and keep the test waiting.
    parent = subprocess.run([sys.executable, "-c", PARENT, str(pid_file)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            timeout=180, env=dict(os.environ))
    assert parent.returncode == -9
    worker = int(pid_file.read_text())
    deadline = time.monotonic() + 15
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(worker), f"HE worker {worker} outlived its parent"
