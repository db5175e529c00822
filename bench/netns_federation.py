"""Run a federation with one daemon per Linux network namespace, and break its network.

Used by ``tests/reliability`` and by ``python -m bench.soak``. Each peer gets
its own namespace (its own IP stack and address); namespaces are joined by the
userspace switch of :mod:`.tun_switch` (per-link latency and loss: ``tc netem`` is
used instead where the kernel has it), and the root namespace gets one more port
so the harness reaches every daemon's API over the emulated network.

Faults are real: ``kill -9`` and restart of the ``fedswarm run`` process, a link
set down/up with ``ip link`` inside the namespace (partition and heal), ``tc tbf``
bandwidth limits on the namespace's interface, SIGSTOP/SIGCONT. Every fault is
logged in :attr:`NetnsFederation.faults` so a report can account for it.

Everything the harness creates (namespaces, TUN devices, processes) is removed by
:meth:`NetnsFederation.close`, which ``__exit__`` calls even when the body raised.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from fedswarm.daemon.demo.local_federation import LocalFederation, PeerProcess

from .tun_switch import TunSwitch, TunUnavailableError, open_tun

FINISHED_STATUSES = ("complete", "local_only", "aborted", "caught_up", "recovered")
# A rolled-back round was interrupted by a crash and then superseded (re-run, or skipped
# by catching up): accounted for, but not progress.
TERMINAL_STATUSES = (*FINISHED_STATUSES, "rolled_back")
_IP_TIMEOUT_S = 10


class NetnsUnavailableError(RuntimeError):
    """Network namespaces (or TUN devices) cannot be created on this machine."""


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=_IP_TIMEOUT_S)
    if result.returncode != 0:
        raise NetnsUnavailableError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def _tc(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "tc", *args], capture_output=True, text=True,
        timeout=_IP_TIMEOUT_S,
    )


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or None when they can (for ``pytest.skip``)."""
    if os.geteuid() != 0:
        return "network-namespace tests need root"
    probe = f"fsrp{uuid.uuid4().hex[:8]}"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "del", probe)
    except (NetnsUnavailableError, FileNotFoundError, subprocess.TimeoutExpired) as exc:
        return f"cannot create network namespaces here ({exc})"
    try:
        os.close(open_tun(f"fsrt{uuid.uuid4().hex[:6]}"))
    except TunUnavailableError as exc:
        return f"cannot create TUN devices here ({exc})"
    return None


@dataclass
class Fault:
    """One injected fault, for the report."""

    kind: str
    peer: int
    at: float
    detail: str = ""


class NetnsNetwork:
    """N namespaces with one address each, joined by a :class:`TunSwitch`."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.tag = uuid.uuid4().hex[:5]
        rng = random.Random(uuid.uuid4().int)
        self.prefix = f"10.{rng.randint(100, 199)}.{rng.randint(0, 255)}"
        self.names = [f"fsr{self.tag}n{i}" for i in range(n)]
        self.ips = [f"{self.prefix}.{i + 1}" for i in range(n)]
        self.root_ip = f"{self.prefix}.254"
        self.dev = "fsnet0"
        self.switch = TunSwitch(seed=seed)
        self._created: list[str] = []
        self._root_dev = f"fsr{self.tag}r"
        self.netem = False  # whether latency/loss go through tc netem (else the switch)

    def up(self) -> None:
        """Create namespaces and TUN ports; on any failure, undo what was made and raise."""
        try:
            for ns, ip in zip(self.names, self.ips, strict=True):
                _ip("netns", "add", ns)
                self._created.append(ns)
                tmp = f"fsr{self.tag}t"
                fd = open_tun(tmp)
                self.switch.add_port(ip, fd)
                _ip("link", "set", "dev", tmp, "netns", ns)
                _ip("-n", ns, "link", "set", "dev", tmp, "name", self.dev)
                _ip("-n", ns, "link", "set", "dev", self.dev, "mtu", "65000")
                _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", self.dev)
                _ip("-n", ns, "link", "set", "dev", self.dev, "up")
                _ip("-n", ns, "link", "set", "dev", "lo", "up")
            fd = open_tun(self._root_dev)
            self.switch.add_port(self.root_ip, fd)
            _ip("link", "set", "dev", self._root_dev, "mtu", "65000")
            _ip("addr", "add", f"{self.root_ip}/24", "dev", self._root_dev)
            _ip("link", "set", "dev", self._root_dev, "up")
            self.switch.start()
            probe = _tc(self.names[0], "qdisc", "replace", "dev", self.dev, "root", "netem",
                        "delay", "0ms")
            self.netem = probe.returncode == 0
            if self.netem:
                _tc(self.names[0], "qdisc", "del", "dev", self.dev, "root")
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        """Remove every namespace and TUN this network made (idempotent)."""
        with contextlib.suppress(OSError):
            self.switch.stop()
        for ns in self._created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=_IP_TIMEOUT_S)
        self._created.clear()
        subprocess.run(["ip", "link", "del", self._root_dev], capture_output=True,
                       timeout=_IP_TIMEOUT_S)

    # -- faults on links ----------------------------------------------------------------

    def link(self, i: int, up: bool) -> None:
        """A real link cut (``ip link set down``) plus the switch's port: a partition."""
        _ip("-n", self.names[i], "link", "set", "dev", self.dev, "up" if up else "down")
        self.switch.set_shape(self.ips[i], up=up)

    def impair(self, i: int, delay_ms: float, loss_pct: float) -> str:
        """Latency and loss on peer ``i``'s link; returns which mechanism applied it."""
        if self.netem:
            result = _tc(self.names[i], "qdisc", "replace", "dev", self.dev, "root", "netem",
                         "delay", f"{delay_ms}ms", "loss", f"{loss_pct}%")
            if result.returncode != 0:
                raise NetnsUnavailableError(f"tc netem: {result.stderr.strip()}")
            return "tc netem"
        self.switch.set_shape(self.ips[i], delay_s=delay_ms / 1000, loss=loss_pct / 100)
        return "tun switch"

    def limit_bandwidth(self, i: int, mbit: float | None) -> None:
        """``tc tbf`` on peer ``i``'s interface (None removes it)."""
        if mbit is None:
            _tc(self.names[i], "qdisc", "del", "dev", self.dev, "root")
            return
        result = _tc(self.names[i], "qdisc", "replace", "dev", self.dev, "root", "tbf",
                     "rate", f"{mbit}mbit", "burst", "256kb", "latency", "500ms")
        if result.returncode != 0:
            raise NetnsUnavailableError(f"tc tbf: {result.stderr.strip()}")


@dataclass
class PeerIntegrity:
    """What the end-of-run check found in one daemon's state directory."""

    org: str
    database_ok: bool
    checkpoint_ok: bool
    checkpoint_round: int | None
    last_finished_round: int
    rounds: dict[str, int]
    missing_rounds: list[int]
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def rounds_without_a_record(rows: list[tuple[int, str]]) -> list[int]:
    """Rounds from 1 to the last one started that no row accounts for.

    A catch-up writes one ``caught_up`` row, at the round it skipped to, for every round
    it skipped (its note names the range): the rounds missing just before such a row are
    accounted for.
    """
    status = {r: s for r, s in rows if r > 0}
    missing: list[int] = []
    for number in range(1, max(status, default=0) + 1):
        if number in status:
            continue
        following = min((r for r in status if r > number), default=None)
        if following is None or status[following] != "caught_up":
            missing.append(number)
    return missing


def check_peer_state(peer: PeerProcess) -> PeerIntegrity:
    """Open a (stopped) daemon's SQLite and checkpoint read-only and account for its rounds.

    Every round from 1 to the last one started must have exactly one row, in a
    terminal status (a round interrupted by a kill is rolled back and then re-run under
    the same number, so it must not stay ``in_progress``/``rolled_back`` unless it
    is the very last one, cut short by the final stop). The checkpoint must load,
    be finite, and be the last finished round's.
    """
    from fedswarm.daemon.demo.command import read_final_adapter
    from fedswarm.learning.checkpoint_files import latest_dir

    problems: list[str] = []
    db_path = peer.state_dir / "fedswarm.sqlite"
    candidates = [db_path] if db_path.exists() else []
    rows: list[tuple[int, str]] = []
    database_ok = False
    if not candidates:
        problems.append("no SQLite database in the state directory")
    else:
        try:
            uri = f"file:{candidates[0]}?mode=ro"
            with sqlite3.connect(uri, uri=True, timeout=10) as db:
                database_ok = db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                rows = [(int(r), str(s)) for r, s in
                        db.execute("SELECT round, status FROM rounds ORDER BY round")]
            if not database_ok:
                problems.append("PRAGMA integrity_check failed")
        except sqlite3.Error as exc:
            problems.append(f"database unreadable: {exc}")
    statuses: dict[str, int] = {}
    for _, status in rows:
        statuses[status] = statuses.get(status, 0) + 1
    last_started = max((r for r, _ in rows if r > 0), default=0)
    missing = rounds_without_a_record(rows)
    if missing:
        problems.append(f"rounds without a record: {missing}")
    for round_no, status in rows:
        if round_no > 0 and status not in TERMINAL_STATUSES and round_no != last_started:
            problems.append(f"round {round_no} left in status {status!r}")
    finished = [r for r, s in rows if r > 0 and s in FINISHED_STATUSES]
    last_finished = max(finished, default=0)
    checkpoint_ok, checkpoint_round = False, None
    root = peer.state_dir / "checkpoint"
    if last_finished == 0 and not root.exists():
        checkpoint_ok = True  # nothing finished, nothing to checkpoint
    else:
        try:
            name = latest_dir(root).name
            checkpoint_round = int(name.split("-", 1)[1])
            vector = read_final_adapter(root)
            checkpoint_ok = bool(np.isfinite(vector).all()) and vector.size > 0
            if not checkpoint_ok:
                problems.append("checkpoint adapter is empty or not finite")
            if checkpoint_round != last_finished:
                problems.append(
                    f"checkpoint is round {checkpoint_round}, database says {last_finished}"
                )
        except Exception as exc:  # any failure to load is the finding itself
            problems.append(f"checkpoint does not load: {type(exc).__name__}: {exc}")
    return PeerIntegrity(
        org=peer.org, database_ok=database_ok, checkpoint_ok=checkpoint_ok,
        checkpoint_round=checkpoint_round, last_finished_round=last_finished,
        rounds=statuses, missing_rounds=missing, problems=problems,
    )


class NetnsFederation:
    """A :class:`LocalFederation` whose daemons each run in their own namespace."""

    def __init__(self, workdir: Path, peers: int, rounds: int, **federation_kwargs: Any) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise NetnsUnavailableError(reason)
        self.net = NetnsNetwork(peers, seed=int(federation_kwargs.get("seed", 0)))
        self.federation = LocalFederation(
            workdir, peers, rounds,
            peer_hosts=list(self.net.ips),
            command_prefixes=[("ip", "netns", "exec", ns) for ns in self.net.names],
            **federation_kwargs,
        )
        self.faults: list[Fault] = []
        self._paused: set[int] = set()

    @property
    def peers(self) -> list[PeerProcess]:
        return self.federation.peers

    def start(self) -> None:
        self.net.up()
        try:
            self.federation.start()
        except BaseException:
            self.close()
            raise

    def close(self) -> dict[str, int | None]:
        """Resume paused daemons, stop all daemons, then remove the network."""
        for i in list(self._paused):
            self.resume(i)
        try:
            return self.federation.stop()
        finally:
            self.net.down()

    def __enter__(self) -> NetnsFederation:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- faults -------------------------------------------------------------------------

    def _record(self, kind: str, peer: int, detail: str = "") -> None:
        self.faults.append(Fault(kind, peer, time.time(), detail))

    def kill(self, i: int) -> None:
        """``kill -9`` the daemon (no chance to checkpoint or say goodbye)."""
        self.federation.kill_peer(self.peers[i], signal.SIGKILL)
        self._record("kill -9", i)

    def restart(self, i: int) -> None:
        self.federation.start_peer(self.peers[i])
        self._record("restart", i)

    def partition(self, i: int) -> None:
        self.net.link(i, up=False)
        self._record("link down", i)

    def heal(self, i: int) -> None:
        self.net.link(i, up=True)
        self._record("link up", i)

    def impair(self, i: int, delay_ms: float, loss_pct: float) -> None:
        how = self.net.impair(i, delay_ms, loss_pct)
        kind = "latency+loss" if delay_ms or loss_pct else "latency+loss cleared"
        self._record(kind, i, f"{delay_ms} ms, {loss_pct}% via {how}")

    def limit_bandwidth(self, i: int, mbit: float | None) -> None:
        self.net.limit_bandwidth(i, mbit)
        if mbit is None:
            self._record("bandwidth cleared", i)
        else:
            self._record("bandwidth", i, f"tc tbf {mbit} Mbit/s")

    def pause(self, i: int) -> None:
        process = self.peers[i].process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGSTOP)
            self._paused.add(i)
            self._record("SIGSTOP", i)

    def resume(self, i: int) -> None:
        process = self.peers[i].process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)
        self._paused.discard(i)
        self._record("SIGCONT", i)

    # -- watching -----------------------------------------------------------------------

    def rounds_completed(self) -> list[int | None]:
        """Each daemon's last finished round from its API (None: unreachable or down).

        A round counts once it ended, whatever the way (aggregated, trained alone,
        aborted after a dropout, or skipped by catching up): that is the federation's
        progress, which a count of aggregated rounds alone would understate.
        """
        out: list[int | None] = []
        for i, peer in enumerate(self.peers):
            status = peer.try_status() if peer.running() and i not in self._paused else None
            out.append(None if status is None else int(status.get("last_finished_round", 0)))
        return out

    def wait_for(
        self, peers: list[int], rounds: int, timeout_s: float, poll_s: float = 1.0
    ) -> bool:
        """Wait (bounded) until each of ``peers`` has finished round ``rounds``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = self.rounds_completed()
            if all((done[i] or 0) >= rounds for i in peers):
                return True
            time.sleep(poll_s)
        return False

    def integrity(self) -> list[PeerIntegrity]:
        """Check every daemon's state directory (call after :meth:`close`)."""
        return [check_peer_state(peer) for peer in self.peers]

    def fault_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for fault in self.faults:
            counts[fault.kind] = counts.get(fault.kind, 0) + 1
        return counts

    def faults_as_dicts(self) -> list[dict[str, Any]]:
        return [asdict(f) for f in self.faults]
