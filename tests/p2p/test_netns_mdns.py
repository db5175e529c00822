"""mDNS discovery between two daemon processes on loopback, in a private
network namespace: the host's ``lo`` has no MULTICAST flag (and we must not
change it), so the test gives its own namespace's ``lo`` multicast and a
224.0.0.0/4 route. Neither node knows the other; gossip announcements are
off; only mDNS can bring them together. Needs root and iproute2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from fedswarm.p2p.identity import Identity

from .conftest import make_roster

pytestmark = [pytest.mark.slow, pytest.mark.netns, pytest.mark.timeout(60)]

CHILD = Path(__file__).with_name("netns_node_main.py")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2 for netns"
)
def test_two_processes_find_each_other_by_mdns(tmp_path: Path) -> None:
    ns = f"fsmdns{uuid.uuid4().hex[:6]}"
    ids = [Identity.generate(), Identity.generate()]
    roster_path = tmp_path / "roster.toml"
    make_roster(ids).save(roster_path)
    procs: list[subprocess.Popen[str]] = []
    _ip("netns", "add", ns)
    try:
        _ip("-n", ns, "link", "set", "lo", "multicast", "on")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "lo")
        env = {**os.environ, "FEDSWARM_TEST_MDNS": "1"}
        for ident in ids:
            procs.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", ns, sys.executable, str(CHILD), ident.seed.hex(),
                     str(roster_path), "/ip4/127.0.0.1/tcp/0"],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                )
            )  # fmt: skip
        deadline = time.monotonic() + 40
        seen: list[list[str]] = [[], []]
        while time.monotonic() < deadline and not all(seen):
            for i, proc in enumerate(procs):
                assert proc.stdout is not None and proc.poll() is None, "node process died"
                seen[i] = json.loads(proc.stdout.readline())
        assert seen == [[ids[1].peer_id], [ids[0].peer_id]]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
