"""A userspace IP switch between network namespaces, with per-link latency, loss and cuts.

Why not veth + bridge + ``tc netem``: the kernels our CI and dev machines run on
(Firecracker guests) ship without ``sch_netem`` (and without iptables/nft), so
latency and loss cannot be added in the kernel. Instead, each namespace gets a
TUN device whose other end is a file descriptor held here; every IPv4 packet a
namespace sends is read by this switch, delayed and/or dropped according to the
sender's link shape, and written to the TUN of the namespace that owns the
destination address. The daemons still talk real TCP through real kernel
stacks; only the wire is emulated. ``tc tbf`` (bandwidth) and ``ip link set
down`` (a real link cut) still work on the TUN devices themselves.

One reader thread multiplexes all ports with ``select``; one writer thread
releases delayed packets in deadline order (FIFO per equal deadline, so a link
with constant delay never reorders).

The switch stands for the network, which in a deployment spends none of the
daemons' CPU; on a bench box it shares the cores (and this process's GIL) with
everything it serves. So the writer counts how late each packet left against its
release time (:class:`SwitchCounters`): a run can tell a slow wire from slow daemons.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import heapq
import os
import random
import select
import struct
import threading
import time
from dataclasses import dataclass, field

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
_MAX_PACKET = 65536


class TunUnavailableError(OSError):
    """``/dev/net/tun`` cannot be opened or configured here."""


def open_tun(name: str) -> int:
    """Create TUN device ``name`` in the current namespace; returns its fd (non-persistent:
    closing the fd, or deleting the namespace it was moved to, removes the device)."""
    if len(name) > 15:
        raise ValueError(f"interface name {name!r} is longer than 15 characters")
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR)
    except OSError as exc:
        raise TunUnavailableError(f"cannot open /dev/net/tun: {exc}") from exc
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError as exc:
        os.close(fd)
        raise TunUnavailableError(f"TUNSETIFF {name}: {exc}") from exc
    return fd


@dataclass
class LinkShape:
    """What the switch does to packets a port sends (its egress link)."""

    delay_s: float = 0.0
    loss: float = 0.0  # probability in [0, 1)
    up: bool = True


LATE_BUCKETS_S = (0.01, 0.1, 1.0)
"""Upper edges of the lateness buckets (seconds past a packet's release time)."""


@dataclass
class SwitchCounters:
    forwarded: int = 0
    dropped_loss: int = 0
    dropped_cut: int = 0
    dropped_unroutable: int = 0
    per_port_sent: dict[str, int] = field(default_factory=dict)
    # forwarded packets by how late they left: <= 10 ms, <= 100 ms, <= 1 s, later
    late_counts: list[int] = field(default_factory=lambda: [0] * (len(LATE_BUCKETS_S) + 1))
    late_max_s: float = 0.0

    def count_late(self, late_s: float) -> None:
        """One forwarded packet: into the first bucket whose edge it does not pass."""
        self.late_counts[bisect.bisect_left(LATE_BUCKETS_S, late_s)] += 1
        self.late_max_s = max(self.late_max_s, late_s)

    def as_dict(self) -> dict[str, object]:
        """What a bench reports: totals and the lateness histogram."""
        names = [f"<={edge * 1000:g}ms" for edge in LATE_BUCKETS_S] + [
            f">{LATE_BUCKETS_S[-1] * 1000:g}ms"]
        return {
            "forwarded": self.forwarded,
            "dropped_loss": self.dropped_loss,
            "dropped_cut": self.dropped_cut,
            "dropped_unroutable": self.dropped_unroutable,
            "late": dict(zip(names, self.late_counts, strict=True)),
            "late_max_s": round(self.late_max_s, 3),
        }


class TunSwitch:
    """Forwards IPv4 packets between TUN fds keyed by their IPv4 address."""

    def __init__(self, seed: int = 0) -> None:
        self._fds: dict[bytes, int] = {}
        self._names: dict[int, str] = {}
        self._shape: dict[bytes, LinkShape] = {}
        self._heap: list[tuple[float, int, int, bytes]] = []
        self._seq = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()
        self._threads: list[threading.Thread] = []
        self._random = random.Random(seed)
        self.counters = SwitchCounters()

    def add_port(self, ip: str, fd: int) -> None:
        """Attach a TUN fd that owns address ``ip`` (before :meth:`start`)."""
        key = _ip_bytes(ip)
        os.set_blocking(fd, False)
        self._fds[key] = fd
        self._names[fd] = ip
        self._shape[key] = LinkShape()

    def set_shape(
        self, ip: str, *, delay_s: float | None = None, loss: float | None = None,
        up: bool | None = None,
    ) -> None:
        """Change the egress shape of port ``ip`` (delay and loss apply to what it sends;
        ``up=False`` drops everything to and from it: a partition)."""
        shape = self._shape[_ip_bytes(ip)]
        if delay_s is not None:
            if delay_s < 0:
                raise ValueError("delay must be >= 0")
            shape.delay_s = delay_s
        if loss is not None:
            if not 0 <= loss < 1:
                raise ValueError("loss must be in [0, 1)")
            shape.loss = loss
        if up is not None:
            shape.up = up

    def start(self) -> None:
        for target, name in ((self._read_loop, "tun-switch-read"),
                             (self._write_loop, "tun-switch-write")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop both threads and close every port fd (which removes root-namespace TUNs)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        os.write(self._wake_w, b"x")
        for thread in self._threads:
            thread.join(timeout=5)
        for fd in list(self._fds.values()):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # -- threads ---------------------------------------------------------------------------

    def _read_loop(self) -> None:
        fds = list(self._fds.values())
        while not self._stopping:
            try:
                ready, _, _ = select.select([*fds, self._wake_r], [], [], 1.0)
            except (OSError, ValueError):
                return
            for fd in ready:
                if fd == self._wake_r:
                    return
                while True:
                    try:
                        packet = os.read(fd, _MAX_PACKET)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break  # the namespace (and its TUN) went away
                    if not packet:
                        break
                    self._route(packet)

    def _route(self, packet: bytes) -> None:
        if len(packet) < 20 or packet[0] >> 4 != 4:
            return  # IPv6 and runts: the harness network is IPv4 only
        src, dst = packet[12:16], packet[16:20]
        src_shape, dst_shape = self._shape.get(src), self._shape.get(dst)
        if dst not in self._fds or src_shape is None or dst_shape is None:
            self.counters.dropped_unroutable += 1
            return
        if not (src_shape.up and dst_shape.up):
            self.counters.dropped_cut += 1
            return
        if src_shape.loss and self._random.random() < src_shape.loss:
            self.counters.dropped_loss += 1
            return
        release = time.monotonic() + src_shape.delay_s
        with self._cond:
            self._seq += 1
            heapq.heappush(self._heap, (release, self._seq, self._fds[dst], packet))
            self._cond.notify()

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (
                    not self._heap or self._heap[0][0] > time.monotonic()
                ):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopping:
                    return
                release, _, fd, packet = heapq.heappop(self._heap)
            try:
                os.write(fd, packet)
                self.counters.forwarded += 1
                self.counters.count_late(time.monotonic() - release)
            except OSError:
                self.counters.dropped_unroutable += 1


def _ip_bytes(ip: str) -> bytes:
    parts = [int(p) for p in ip.split(".")]
    if len(parts) != 4 or not all(0 <= p <= 255 for p in parts):
        raise ValueError(f"not an IPv4 address: {ip!r}")
    return bytes(parts)
