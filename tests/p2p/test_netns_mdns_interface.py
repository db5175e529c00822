"""mDNS bound to one interface: a node answers and listens on that segment only.

Three namespaces: ``mid`` has one veth to ``a`` and one to ``b``. The node in
``mid`` binds mDNS to its interface towards ``a``; the nodes in ``a`` and ``b``
bind theirs to their only interface. ``b`` can reach ``mid``'s address over its
link (a route is added), and ``mid`` can reach ``b``, so only mDNS decides:
py-libp2p's own mDNS listens and answers on every interface and would bring
``mid`` and ``b`` together. Gossip address announcements are off. Needs root and
iproute2.
"""

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
from fedswarm.p2p.mdns import MdnsInterfaceError, interface_ipv4_addresses

from .conftest import make_roster

CHILD = Path(__file__).with_name("netns_node_main.py")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def test_unknown_interface_is_named_in_the_error() -> None:
    with pytest.raises(MdnsInterfaceError, match="no-such-if0"):
        interface_ipv4_addresses("no-such-if0")


def test_loopback_has_its_ipv4_address() -> None:
    assert "127.0.0.1" in interface_ipv4_addresses("lo")


@pytest.mark.slow
@pytest.mark.netns
@pytest.mark.timeout(90)
@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2 for netns"
)
def test_mdns_bound_to_one_interface_ignores_the_other_segment(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    mid, ns_a, ns_b = f"fsm{tag}m", f"fsm{tag}a", f"fsm{tag}b"
    ids = [Identity.generate() for _ in range(3)]  # mid, a, b
    roster_path = tmp_path / "roster.toml"
    make_roster(ids).save(roster_path)
    procs: list[subprocess.Popen[str]] = []
    try:
        try:
            for ns in (mid, ns_a, ns_b):
                _ip("netns", "add", ns)
                _ip("-n", ns, "link", "set", "lo", "up")
            for end, ns, net in (("toa", ns_a, "10.78.1"), ("tob", ns_b, "10.78.2")):
                _ip("link", "add", end, "netns", mid, "type", "veth", "peer", "name", "eth0",
                    "netns", ns)  # fmt: skip
                _ip("-n", mid, "addr", "add", f"{net}.1/24", "dev", end)
                _ip("-n", mid, "link", "set", end, "up")
                _ip("-n", ns, "addr", "add", f"{net}.2/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns_b, "route", "add", "10.78.1.0/24", "via", "10.78.2.1")
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot build the namespace topology: {exc.stderr!r}")
        nodes = [
            (mid, "toa", "/ip4/10.78.1.1/tcp/0"),
            (ns_a, "eth0", "/ip4/10.78.1.2/tcp/0"),
            (ns_b, "eth0", "/ip4/10.78.2.2/tcp/0"),
        ]
        for ident, (ns, interface, listen) in zip(ids, nodes, strict=True):
            env = {
                **os.environ,
                "FEDSWARM_TEST_MDNS": "1",
                "FEDSWARM_TEST_MDNS_INTERFACE": interface,
            }
            procs.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", ns, sys.executable, str(CHILD), ident.seed.hex(),
                     str(roster_path), listen],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                )
            )  # fmt: skip
        seen: list[list[str]] = [[], [], []]

        def poll() -> None:
            for i, proc in enumerate(procs):
                assert proc.stdout is not None and proc.poll() is None, f"node {i} died"
                seen[i] = json.loads(proc.stdout.readline())

        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not (seen[0] and seen[1]):
            poll()
        assert seen[0] == [ids[1].peer_id] and seen[1] == [ids[0].peer_id], seen
        # mDNS found a and mid within seconds; give b as long again to show up.
        settle = time.monotonic() + 8
        while time.monotonic() < settle:
            poll()
            assert seen[2] == [], f"b reached {seen[2]} over the segment mid does not serve"
            assert ids[2].peer_id not in seen[0], "mid found b over the unbound interface"
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)
        for ns in (mid, ns_a, ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
