"""SIGTERM in the middle of a secure aggregation: the daemon tells systemd and exits 0 in time.

What systemd relies on (packaging/systemd, ``Type=notify``, ``TimeoutStopSec=90``):

* ``READY=1`` once the daemon is loaded and listening, ``STATUS=round N: <state>``
  as it works, and ``STOPPING=1`` as soon as SIGTERM arrives, all as datagrams on
  the AF_UNIX socket named by ``$NOTIFY_SOCKET``;
* an in-flight aggregation is abandoned within ``SHUTDOWN_GRACE_S`` (30 s) and the
  process exits with status 0, well inside ``TimeoutStopSec``.

To make the aggregation unable to finish by itself, another group member is
frozen (SIGSTOP) the moment the daemon under test starts aggregating, and the
round deadline is longer than the grace, so only the shutdown path can end it.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from fedswarm.daemon.demo.local_federation import LocalFederation, PeerProcess
from fedswarm.daemon.service import SHUTDOWN_GRACE_S

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

#: What the unit allows before SIGKILL is TimeoutStopSec=90; the daemon promises the grace
#: plus a little for closing the network, the API and the HE worker.
EXIT_BOUND_S = SHUTDOWN_GRACE_S + 20.0


class NotifyListener:
    """A minimal stand-in for systemd's notify socket: records every datagram."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.extend(data.decode("utf-8", "replace").splitlines())

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self._sock.close()


def wait_for_state(peer: PeerProcess, state: str, timeout_s: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not peer.running():
            pytest.fail(f"{peer.org} exited early:\n{peer.log_path.read_text(errors='replace')}")
        status = peer.try_status()
        if status is not None and status["state"] == state:
            return status
        time.sleep(0.05)
    pytest.fail(f"{peer.org} never reached state {state!r} in {timeout_s:.0f} s")


def test_sigterm_mid_aggregation_notifies_and_exits_zero_in_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    federation = LocalFederation(
        tmp_path, peers=3, rounds=0, local_steps=3, batch_size=4,
        round_deadline_s=SHUTDOWN_GRACE_S + 60.0,
    )
    federation.prepare()
    frozen, _, target = federation.peers
    listener = NotifyListener(tmp_path / "notify.sock")
    try:
        federation.start_peer(federation.peers[0])
        federation.start_peer(federation.peers[1])
        monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
        federation.start_peer(target)
        monkeypatch.delenv("NOTIFY_SOCKET")

        status = wait_for_state(target, "aggregating", timeout_s=300)
        assert frozen.process is not None
        os.kill(frozen.process.pid, signal.SIGSTOP)
        assert target.process is not None
        sent = time.monotonic()
        target.process.send_signal(signal.SIGTERM)
        code = target.process.wait(timeout=EXIT_BOUND_S + 30)
        took = time.monotonic() - sent
    finally:
        codes = federation.stop()  # SIGCONTs the frozen peer, reaps everything
        listener.close()

    print(f"exit {code} {took:.1f} s after SIGTERM mid-aggregation")
    assert code == 0, target.log_path.read_text(errors="replace")[-3000:]
    assert took < EXIT_BOUND_S, f"exit took {took:.1f} s after SIGTERM"
    assert all(c == 0 for c in codes.values()), codes

    messages = listener.messages
    assert "READY=1" in messages, messages
    assert "STOPPING=1" in messages, messages
    assert messages.index("READY=1") < messages.index("STOPPING=1"), messages
    statuses = [m for m in messages if m.startswith("STATUS=")]
    assert f"STATUS=round {status['round']}: aggregating" in statuses, statuses
    after_stop = messages[messages.index("STOPPING=1"):]
    assert any(m.startswith("STATUS=") and "stopp" in m for m in after_stop), after_stop
    log = target.log_path.read_text(errors="replace")
    assert "stop requested" in log
