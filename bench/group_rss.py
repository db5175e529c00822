"""Peak RSS and PSS of whole process groups, sampled from /proc while they run.

A daemon is more than one process: TenSEAL runs in a ``spawn`` pool worker with its
own copy of torch (docs/architecture.md). ``LocalFederation`` starts each daemon in a
session of its own, so its process group is the daemon and everything it started.
Each process's VmHWM is the kernel's own high-water mark, so sampling only has to see
a process once before it exits; the group's figure is the sum of its processes' peaks
(an upper bound of the group's peak, exact when they peak together) and the main
process's alone.

RSS counts every mapped page a process touches, shared ones included: three daemons
that map the same safetensors file each count all of it. PSS (``smaps_rollup``) splits a
shared page between its users, so the groups' PSS figures add up to the memory they
really take; it has no kernel high-water mark, so its peak is the largest sample.
"""

from __future__ import annotations

import threading
from pathlib import Path

PROC = Path("/proc")


def field_kb(text: str, name: str) -> int:
    """The kB value of ``name:`` in a /proc status-style text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def _process_group(pid_dir: Path) -> int | None:
    try:
        stat = (pid_dir / "stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[2])


def _peaks_kb(pid_dir: Path) -> tuple[int, int] | None:
    """(VmHWM, Pss) in kB of one process, None when it is gone or unreadable."""
    try:
        status = (pid_dir / "status").read_text()
        rollup = (pid_dir / "smaps_rollup").read_text()
    except OSError:
        return None
    return field_kb(status, "VmHWM"), field_kb(rollup, "Pss")


class GroupPeakRss:
    """Samples every ``interval_s`` the VmHWM and PSS of each process in the given groups."""

    def __init__(self, groups: list[int], interval_s: float = 0.5) -> None:
        self.groups = set(groups)
        self.interval_s = interval_s
        self.peak_kb: dict[int, dict[int, int]] = {g: {} for g in groups}  # group -> pid -> kB
        self.pss_kb: dict[int, dict[int, int]] = {g: {} for g in groups}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="group-rss", daemon=True)

    def sample(self) -> None:
        for pid_dir in PROC.iterdir():
            if not pid_dir.name.isdigit():
                continue
            group = _process_group(pid_dir)
            if group not in self.groups:
                continue
            peaks = _peaks_kb(pid_dir)
            if peaks is None:
                continue
            pid = int(pid_dir.name)
            for table, value in ((self.peak_kb[group], peaks[0]), (self.pss_kb[group], peaks[1])):
                table[pid] = max(table.get(pid, 0), value)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> GroupPeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report_mb(self, group: int) -> dict[str, float | int]:
        """The group's leader (the daemon), its sum over processes, and the process count."""
        pids = self.peak_kb.get(group, {})
        pss = self.pss_kb.get(group, {})
        return {
            "daemon_peak_mb": round(pids.get(group, 0) / 1024, 1),
            "group_sum_of_peaks_mb": round(sum(pids.values()) / 1024, 1),
            "daemon_pss_peak_mb": round(pss.get(group, 0) / 1024, 1),
            "group_sum_of_pss_peaks_mb": round(sum(pss.values()) / 1024, 1),
            "processes": len(pids),
        }
