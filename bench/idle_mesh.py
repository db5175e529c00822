"""What an idle federation costs: N bare p2p nodes, one process each, on loopback.

    python -m bench.idle_mesh --peers 32 --seconds 120 [--heartbeat 3.9
        [--heartbeat-via messages]] [--json out.json]

Issue #27: 32 daemons never formed a federation on a 2-core box, and 32 *bare* nodes
(no model, no training, no secure aggregation) lost links for good there. This
benchmark isolates that idle cost. Every node is a real :class:`~fedswarm.p2p.node.P2PNode`
in its own process, with every other member's address in the roster (so every node
dials every other, as daemons do), running its maintenance loop (announcements over
GossipSub, pings to every member, redials) and nothing else, for ``--seconds``.

It reports, per node and over the mesh: CPU seconds (the process's own user + system
time) and the cores the whole mesh kept busy, members connected at the end (of
N − 1) and the fewest any node had over the run's second half, pings sent and ping
streams opened, connections closed as dead, and dials; and a ``timeline`` of the mesh in
10 s windows (cores busy, members connected, dials, dead-link closings), which tells a mesh
that never formed from one that formed and then fell apart. A healthy idle mesh keeps every
member connected with few dials after start-up and uses a small share of the cores.

``--heartbeat S`` adds what a daemon adds on top of the node: every node sends a
300-byte beat every S seconds (±20 %), and each node counts how many it heard. With
``--heartbeat-via gossip`` (the default, how daemons sent heartbeats before) the beat
is published on one topic all subscribe to; with ``messages`` (how daemons send them
now) it is written to each connected member's message stream
(``P2PNode.send_to_connected``), and such messages spare the pings (``p2p/ping.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fedswarm.p2p.identity import Identity
from fedswarm.p2p.membership import MembershipConfig
from fedswarm.p2p.roster import Member, Roster

from .machine import cpu_model

START_SLACK_S = 60.0
"""Seconds allowed for N processes to import and start on a small box before the
measured window begins (every node's window ends at the same wall-clock time)."""
_LINGER_S = 5.0


def _free_ports(count: int) -> list[int]:
    """Ports the kernel hands out now; held open together so none repeats."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# ------------------------------------------------------------------------------ child


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


TIMELINE_EVERY_S = 10
TIMELINE_COUNTERS = ("dials", "dead_links_closed", "messages_not_sent")
"""Each node's ``timeline`` row: wall-clock time, members connected, CPU s since its start,
then these counters so far, so a mesh that formed and then fell apart shows when it did."""

HEARTBEAT_TOPIC = "bench-heartbeat"
HEARTBEAT_BYTES = 300  # about a daemon's membership heartbeat
HEARTBEAT_WRITE_TIMEOUT_S = MembershipConfig().write_timeout_s
"""How long one beat's write to one member may take: the daemon's own limit
(``Membership.publish_now``). Cut at the beat interval instead, a write that waits for a
member's stream to open under load drops the half-open stream, the next beat starts
over, and on a busy box none gets through while each try costs a negotiation."""


async def _child(seed_hex: str, roster_path: str, listen: str, end_at: float,
                 heartbeat_s: float, via: str = "gossip") -> dict[str, Any]:
    """Run one node until the wall-clock ``end_at`` that every node shares, snapshot it,
    and stay up a few seconds more so the others' snapshots see it connected.

    ``heartbeat_s`` > 0: the node also publishes a 300-byte message on one topic that
    every node subscribes to, that often — a daemon's membership heartbeat."""
    from fedswarm.p2p.errors import P2PError
    from fedswarm.p2p.framing import BlobHeader
    from fedswarm.p2p.node import NodeConfig, P2PNode

    heard = [0]

    async def count_message(header: BlobHeader, data: bytes) -> None:
        if header.kind == HEARTBEAT_TOPIC:
            heard[0] += 1

    async def count_gossip(topic: str, sender: str, payload: bytes) -> None:
        heard[0] += 1

    roster = Roster.load(Path(roster_path))
    members = len(roster.members)
    node = P2PNode(Identity(bytes.fromhex(seed_hex)), roster, NodeConfig(listen=listen),
                   on_blob=count_message, on_gossip=count_gossip)
    await node.start()
    if heartbeat_s > 0:
        await node.subscribe(HEARTBEAT_TOPIC)
    started, cpu_started = time.time(), _cpu_s()
    seconds = max(end_at - started, 1.0)
    samples: list[tuple[float, int]] = []
    timeline: list[list[float]] = []  # rows of TIMELINE_COUNTERS' docstring, every 10th sample

    async def beat_forever() -> None:
        """A daemon's membership beat: its own task, ±20 % jitter, never queued."""
        while True:
            beat = os.urandom(HEARTBEAT_BYTES)
            try:
                if via == "gossip":
                    await node.publish(HEARTBEAT_TOPIC, beat)
                else:
                    await node.send_to_connected(HEARTBEAT_TOPIC, 0, beat,
                                                 timeout=HEARTBEAT_WRITE_TIMEOUT_S)
            except P2PError as exc:
                print(f"heartbeat not sent: {exc}", file=sys.stderr)
            await asyncio.sleep(heartbeat_s * random.uniform(0.8, 1.2))

    beating = asyncio.create_task(beat_forever()) if heartbeat_s > 0 else None
    try:
        while (elapsed := time.time() - started) < seconds:
            samples.append((elapsed, len(node.connected_peers())))
            if len(samples) % TIMELINE_EVERY_S == 1:
                now = node.stats()
                timeline.append([round(time.time(), 1), samples[-1][1],
                                 round(_cpu_s() - cpu_started, 2),
                                 *(int(now.get(k, 0)) for k in TIMELINE_COUNTERS)])
            await asyncio.sleep(1.0)
        if beating is not None:
            beating.cancel()
        stats = node.stats()
        connected = len(node.connected_peers())
        cpu = _cpu_s() - cpu_started
        await asyncio.sleep(_LINGER_S)
    finally:
        await node.stop()
    second_half = [n for t, n in samples if t >= seconds / 2] or [connected]
    return {
        "peer_id": node.peer_id,
        "seconds_up": round(seconds, 1),
        "cpu_s": round(cpu, 2),
        "connected_end": connected,
        "connected_min_second_half": min(second_half),
        "first_full_s": next((round(t, 1) for t, n in samples if n == members - 1), None),
        "heartbeats_heard": heard[0],
        "timeline": timeline,
        "counters": {k: stats.get(k, 0) for k in (
            "pings_sent", "ping_streams_opened", "dead_links_closed", "dials",
            "messages_skipped_busy", "messages_not_sent")},
    }


# ----------------------------------------------------------------------------- parent


def run(peers: int, seconds: float, workdir: Path,
        start_slack_s: float = START_SLACK_S, heartbeat_s: float = 0.0,
        heartbeat_via: str = "gossip") -> dict[str, Any]:
    ids = [Identity.generate() for _ in range(peers)]
    ports = _free_ports(peers)
    roster = Roster("idle-mesh", tuple(
        Member(org=f"org{i}", peer_id=ident.peer_id,
               addrs=(f"/ip4/127.0.0.1/tcp/{port}/p2p/{ident.peer_id}",))
        for i, (ident, port) in enumerate(zip(ids, ports, strict=True))))
    roster_path = workdir / "roster.toml"
    roster.save(roster_path)
    procs = []
    end_at = time.time() + start_slack_s + seconds
    for i, (ident, port) in enumerate(zip(ids, ports, strict=True)):
        log = (workdir / f"node{i:02d}.log").open("w")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "bench.idle_mesh", "--child", ident.seed.hex(),
             str(roster_path), f"/ip4/127.0.0.1/tcp/{port}", str(end_at), str(heartbeat_s),
             heartbeat_via],
            stdout=subprocess.PIPE, stderr=log, text=True,
            cwd=Path(__file__).resolve().parent.parent))
    nodes: list[dict[str, Any]] = []
    failed = 0
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=max(end_at - time.time(), 0) + _LINGER_S + 30)
            nodes.append(json.loads(out.strip().splitlines()[-1]))
        except (subprocess.TimeoutExpired, json.JSONDecodeError, IndexError):
            failed += 1
            proc.kill()
            with contextlib.suppress(Exception):
                proc.communicate(timeout=10)
    return {"benchmark": "idle_mesh", "peers": peers, "seconds": seconds,
            "heartbeat_s": heartbeat_s, "heartbeat_via": heartbeat_via,
            "start_slack_s": start_slack_s, "nodes_failed": failed, "nodes": nodes,
            "summary": summarise(nodes, peers), "timeline": mesh_timeline(nodes, end_at),
            "machine": machine()}


def mesh_timeline(nodes: list[dict[str, Any]], end_at: float) -> list[dict[str, Any]]:
    """The mesh window by window (``TIMELINE_EVERY_S``, counted back from the shared end):
    cores busy, the fewest and the median members connected, dials and dead-link closings.

    Each node's rows are cumulative; a window gets the difference between a node's
    consecutive rows, assigned to the window the later row falls in."""
    windows: dict[int, dict[str, Any]] = {}
    for node in nodes:
        rows = node.get("timeline", [])
        for before, row in itertools.pairwise(rows):
            index = int((end_at - row[0]) // TIMELINE_EVERY_S)
            w = windows.setdefault(index, {"cpu": 0.0, "connected": [], "dials": 0, "dead": 0})
            w["cpu"] += row[2] - before[2]
            w["connected"].append(row[1])
            w["dials"] += row[3] - before[3]
            w["dead"] += row[4] - before[4]
    return [{"seconds_before_end": (index + 1) * TIMELINE_EVERY_S,
             "nodes": len(w["connected"]),
             "cores_busy": round(w["cpu"] / TIMELINE_EVERY_S, 2),
             "connected_min": min(w["connected"]),
             "connected_median": statistics.median(w["connected"]),
             "dials": w["dials"], "dead_links_closed": w["dead"]}
            for index, w in sorted(windows.items(), reverse=True)]


def summarise(nodes: list[dict[str, Any]], peers: int) -> dict[str, Any]:
    """Mesh-wide figures. ``cores_busy``: the nodes' CPU from their start to the shared
    end, over the median node's time up (start-up imports excluded)."""
    if not nodes:
        return {}
    cpu = [n["cpu_s"] for n in nodes]

    def total(key: str) -> int:
        return sum(int(n["counters"][key]) for n in nodes)

    return {
        "cpu_s_median": round(statistics.median(cpu), 2),
        "cpu_s_max": round(max(cpu), 2),
        "cores_busy": round(sum(cpu) / statistics.median(n["seconds_up"] for n in nodes), 2),
        "first_full_s_max": max((n["first_full_s"] for n in nodes
                                 if n["first_full_s"] is not None), default=None),
        "connected_end_min": min(n["connected_end"] for n in nodes),
        "connected_end_median": statistics.median(n["connected_end"] for n in nodes),
        "connected_second_half_min": min(n["connected_min_second_half"] for n in nodes),
        "full_mesh_share": round(sum(n["connected_end"] == peers - 1 for n in nodes)
                                 / len(nodes), 3),
        "pings_sent": total("pings_sent"),
        "ping_streams_opened": total("ping_streams_opened"),
        "dead_links_closed": total("dead_links_closed"),
        "dials": total("dials"),
        "heartbeats_skipped_busy": total("messages_skipped_busy"),
        "heartbeats_not_sent": total("messages_not_sent"),
        "heartbeats_heard_median": statistics.median(n["heartbeats_heard"] for n in nodes),
    }


def machine() -> dict[str, Any]:
    import platform
    from importlib.metadata import version

    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "libp2p": version("libp2p")}


def _table(result: dict[str, Any]) -> str:
    s = result["summary"]
    rows = [("peers", result["peers"]), ("seconds", result["seconds"]),
            ("heartbeat every s", result["heartbeat_s"] or "off"),
            ("heartbeat via", result["heartbeat_via"]),
            ("nodes failed", result["nodes_failed"]), *s.items()]
    return "\n".join(f"{k:<28}{v}" for k, v in rows)


def _timeline_table(timeline: list[dict[str, Any]]) -> str:
    head = f"{'s before end':>12} {'nodes':>5} {'cores':>6} {'conn min':>8} {'conn med':>8} " \
           f"{'dials':>6} {'dead':>5}"
    return "\n".join([head, *(
        f"{w['seconds_before_end']:>12} {w['nodes']:>5} {w['cores_busy']:>6} "
        f"{w['connected_min']:>8} {w['connected_median']:>8} {w['dials']:>6} "
        f"{w['dead_links_closed']:>5}" for w in timeline)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=120.0,
                        help="how long each node runs, up to one shared end time")
    parser.add_argument("--start-slack", type=float, default=START_SLACK_S,
                        help="seconds for the processes to start before the shared window")
    parser.add_argument("--json")
    parser.add_argument("--heartbeat", type=float, default=0.0,
                        help="every node also gossips a 300-byte heartbeat this often "
                             "(seconds; a daemon's [federation] heartbeat_s; 0: off)")
    parser.add_argument("--heartbeat-via", choices=("gossip", "messages"), default="gossip",
                        help="gossip: one GossipSub publish per beat; messages: one message "
                             "to each connected member on its long-lived message stream")
    parser.add_argument("--child", nargs=6,
                        metavar=("SEED", "ROSTER", "LISTEN", "END_AT", "HEARTBEAT_S", "VIA"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        seed, roster_path, listen, end_at, heartbeat_s, via = args.child
        print(json.dumps(asyncio.run(_child(seed, roster_path, listen, float(end_at),
                                            float(heartbeat_s), via))),
              flush=True)
        return 0
    if args.peers < 2:
        parser.error("--peers: at least 2")
    with tempfile.TemporaryDirectory(prefix="fs-idle-") as tmp:
        result = run(args.peers, args.seconds, Path(tmp), args.start_slack, args.heartbeat,
                     args.heartbeat_via)
    print(_table(result))
    print(_timeline_table(result["timeline"]))
    print(f"machine: {result['machine']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if not result["nodes_failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
