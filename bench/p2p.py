"""Blob transfer benchmark: P2PNode.send_blob vs a bare py-libp2p stream vs plain TCP.

    python -m fedswarm.bench.p2p --json out.json [--sizes 1,50,200] [--rounds 3]

For every size and method a fresh receiver and sender *process* pair moves the
same number of random bytes over loopback; the receiver keeps the whole blob in
memory (as the daemon does) and acknowledges. Reported per run: MB/s (sender
clock, from first byte to ack), and each process's peak RSS growth over its
RSS just before the transfer (VmHWM is a high-water mark, hence one process
pair per run). The sender's growth includes its own copy of the payload.
Blobs under 10 MiB are sent 9 times per pair (median) by 7 pairs per method
(median pair, methods interleaved): one pair's median moves by about 20 %
from the next pair's, which is more than the difference being measured.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import platform
import socket
import struct
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

MB = 2**20
METHODS = ("fedswarm", "bare_libp2p", "tcp")
_BARE_PROTOCOL = "/bench/bare/1.0.0"
# The best write size for a bare Yamux stream, and the one send_blob uses: a
# whole number of 65524-byte frame payloads (256 KiB would add a 48-byte frame
# to every write).
_BARE_CHUNK = 4 * 65524


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def _peak_rss_mb() -> float:
    """VmHWM: the high-water mark of *this* program's memory. (``ru_maxrss``
    would also count the parent's image, inherited across fork + exec.)"""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _emit(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- fedswarm method


async def _fed_receiver(seed: str, roster_path: str, repeat: int) -> None:
    from fedswarm.p2p.framing import BlobHeader
    from fedswarm.p2p.identity import Identity
    from fedswarm.p2p.node import NodeConfig, P2PNode
    from fedswarm.p2p.roster import Roster

    done = asyncio.Event()
    result: dict[str, Any] = {}
    last: list[tuple[BlobHeader, bytes]] = []

    async def on_blob(header: BlobHeader, data: bytes) -> None:
        # The node verified sha256 before calling us, inside its read loop, as
        # the bare and TCP receivers do. The benchmark's own second check of
        # the last blob runs after the transfers, off the timed path (and not
        # in a thread beside the next transfer); earlier blobs are checked
        # for length only, so at most one blob is held after its ack.
        result["ok"] = result.get("ok", True) and len(data) == header.length
        result["peak_rss_mb"] = _peak_rss_mb()
        result["count"] = result.get("count", 0) + 1
        if result["count"] >= repeat:
            last.append((header, data))
            done.set()

    async def on_gossip(topic: str, sender: str, payload: bytes) -> None:
        pass

    node = P2PNode(
        Identity(bytes.fromhex(seed)),
        Roster.load(Path(roster_path)),
        NodeConfig(max_blob_bytes=2**31),
        on_blob=on_blob,
        on_gossip=on_gossip,
    )
    await node.start()
    base = _rss_mb()
    _emit({"addr": node.listen_addrs[0]})
    await done.wait()
    header, data = last[0]
    digest = await asyncio.to_thread(lambda: hashlib.sha256(data).digest())
    ok = result["ok"] and digest == header.sha256
    _emit({"ok": ok, "base_rss_mb": base, "peak_rss_mb": result["peak_rss_mb"]})
    await asyncio.sleep(0.5)  # let the ack leave before tearing down
    await node.stop()


async def _fed_sender(seed: str, roster_path: str, addr: str, size: int, repeat: int) -> None:
    from fedswarm.p2p.framing import BlobHeader
    from fedswarm.p2p.identity import Identity
    from fedswarm.p2p.node import NodeConfig, P2PNode
    from fedswarm.p2p.roster import Roster

    async def on_blob(header: BlobHeader, data: bytes) -> None:
        pass

    async def on_gossip(topic: str, sender: str, payload: bytes) -> None:
        pass

    node = P2PNode(
        Identity(bytes.fromhex(seed)),
        Roster.load(Path(roster_path)),
        NodeConfig(max_blob_bytes=2**31, blob_timeout_s=600),
        on_blob=on_blob,
        on_gossip=on_gossip,
    )
    await node.start()
    peer = await node.dial(addr)
    base = _rss_mb()
    payload = os.urandom(size)
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        await node.send_blob(peer, "bench", i, payload)
        times.append(time.perf_counter() - start)
    _emit({"times": times, "base_rss_mb": base, "peak_rss_mb": _peak_rss_mb()})
    await node.stop()


# ---------------------------------------------------------------- bare libp2p method


def _bare_receiver(seed: str, repeat: int) -> None:
    import multiaddr
    import trio
    from fedswarm.p2p.host import build_host
    from fedswarm.p2p.identity import Identity
    from libp2p.custom_types import TProtocol

    async def main() -> None:
        host = build_host(Identity(bytes.fromhex(seed)), ["/ip4/127.0.0.1/tcp/0"])
        finished = trio.Event()
        out: dict[str, Any] = {"ok": True, "count": 0}

        async def handler(stream: Any) -> None:
            head = b""
            while len(head) < 40:
                head += await stream.read(40 - len(head))
            (size,) = struct.unpack(">Q", head[:8])
            buf, digest, got = io.BytesIO(), hashlib.sha256(), 0
            while got < size:
                chunk = await stream.read(min(_BARE_CHUNK, size - got))
                buf.write(chunk)
                digest.update(chunk)
                got += len(chunk)
            data = buf.getvalue()
            out["ok"] = out["ok"] and digest.digest() == head[8:] and len(data) == size
            out["peak"] = _peak_rss_mb()
            await stream.write(b"k")
            await stream.close()
            out["count"] += 1
            if out["count"] >= repeat:
                finished.set()

        async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            host.set_stream_handler(TProtocol(_BARE_PROTOCOL), handler)
            base = _rss_mb()
            _emit({"addr": str(host.get_addrs()[0])})
            await finished.wait()
            _emit({"ok": out["ok"], "base_rss_mb": base, "peak_rss_mb": out["peak"]})
            await trio.sleep(0.5)

    trio.run(main)


def _bare_sender(seed: str, addr: str, size: int, repeat: int) -> None:
    import multiaddr
    import trio
    from fedswarm.p2p.host import build_host
    from fedswarm.p2p.identity import Identity
    from libp2p.custom_types import TProtocol
    from libp2p.peer.id import ID
    from libp2p.peer.peerinfo import PeerInfo

    async def main() -> None:
        host = build_host(Identity(bytes.fromhex(seed)))
        async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            m = multiaddr.Multiaddr(addr)
            pid = ID.from_base58(m.value_for_protocol("p2p"))
            await host.connect(PeerInfo(pid, [m.decapsulate(multiaddr.Multiaddr(f"/p2p/{pid}"))]))
            base = _rss_mb()
            payload = os.urandom(size)
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                digest = hashlib.sha256(payload).digest()  # same work as send_blob
                stream = await host.new_stream(pid, [TProtocol(_BARE_PROTOCOL)])
                await stream.write(struct.pack(">Q", size) + digest)
                view = memoryview(payload)
                for off in range(0, size, _BARE_CHUNK):
                    await stream.write(bytes(view[off : off + _BARE_CHUNK]))
                await stream.read(1)
                times.append(time.perf_counter() - start)
                await stream.close()
            _emit({"times": times, "base_rss_mb": base, "peak_rss_mb": _peak_rss_mb()})

    trio.run(main)


# ---------------------------------------------------------------- plain TCP method


def _tcp_receiver(repeat: int) -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    base = _rss_mb()
    _emit({"addr": f"127.0.0.1:{srv.getsockname()[1]}"})
    ok, peak = True, 0.0
    for _ in range(repeat):  # one connection per blob, like one stream per blob
        conn, _ = srv.accept()
        with conn:
            head = b""
            while len(head) < 40:
                head += conn.recv(40 - len(head))
            (size,) = struct.unpack(">Q", head[:8])
            buf, digest, got = io.BytesIO(), hashlib.sha256(), 0
            while got < size:
                chunk = conn.recv(min(256 * 1024, size - got))
                if not chunk:
                    break
                buf.write(chunk)
                digest.update(chunk)
                got += len(chunk)
            data = buf.getvalue()
            ok = ok and digest.digest() == head[8:] and len(data) == size
            peak = _peak_rss_mb()
            conn.sendall(b"k")
    _emit({"ok": ok, "base_rss_mb": base, "peak_rss_mb": peak})


def _tcp_sender(addr: str, size: int, repeat: int) -> None:
    host, port = addr.rsplit(":", 1)
    base = _rss_mb()
    payload = os.urandom(size)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        sock = socket.create_connection((host, int(port)))
        digest = hashlib.sha256(payload).digest()
        sock.sendall(struct.pack(">Q", size) + digest)
        sock.sendall(payload)
        sock.recv(1)
        times.append(time.perf_counter() - start)
        sock.close()
    _emit({"times": times, "base_rss_mb": base, "peak_rss_mb": _peak_rss_mb()})


# ---------------------------------------------------------------- orchestration


def _child(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fedswarm.bench.p2p", *args],
        stdout=subprocess.PIPE,
        text=True,
    )


def _read_json(proc: subprocess.Popen[str], timeout: float = 600) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=timeout)
        raise RuntimeError(f"benchmark child exited with {proc.returncode} and no output")
    return json.loads(line)  # type: ignore[no-any-return]


def run_one(method: str, size: int, workdir: Path, repeat: int = 1) -> dict[str, Any]:
    from fedswarm.p2p.identity import Identity
    from fedswarm.p2p.roster import Member, Roster

    recv_id, send_id = Identity.generate(), Identity.generate()
    roster_path = workdir / "roster.toml"
    Roster("bench", (Member("r", recv_id.peer_id), Member("s", send_id.peer_id))).save(roster_path)
    if method == "fedswarm":
        rargs = ["--role", "fed-recv", "--seed", recv_id.seed.hex(), "--roster", str(roster_path)]
    elif method == "bare_libp2p":
        rargs = ["--role", "bare-recv", "--seed", recv_id.seed.hex()]
    else:
        rargs = ["--role", "tcp-recv"]
    rargs += ["--repeat", str(repeat)]
    receiver = _child(rargs)
    try:
        addr = _read_json(receiver)["addr"]
        sargs = ["--addr", addr, "--size", str(size), "--repeat", str(repeat)]
        if method == "fedswarm":
            sargs += [
                "--role",
                "fed-send",
                "--seed",
                send_id.seed.hex(),
                "--roster",
                str(roster_path),
            ]
        elif method == "bare_libp2p":
            sargs += ["--role", "bare-send", "--seed", send_id.seed.hex()]
        else:
            sargs += ["--role", "tcp-send"]
        sender = _child(sargs)
        sent = _read_json(sender)
        received = _read_json(receiver)
        sender.wait(timeout=60)
        receiver.wait(timeout=60)
    finally:
        for proc in (receiver,):
            if proc.poll() is None:
                proc.kill()
    blob_mb = size / MB
    times = sorted(sent["times"])
    median = times[len(times) // 2]
    return {
        "method": method,
        "size_mb": blob_mb,
        "repeat": repeat,
        "seconds": median,
        "first_seconds": sent["times"][0],
        "mb_per_s": blob_mb / median,
        "sha_ok": bool(received["ok"]),
        "receiver_rss_growth_mb": received["peak_rss_mb"] - received["base_rss_mb"],
        "sender_rss_growth_mb": sent["peak_rss_mb"] - sent["base_rss_mb"],
    }


def _median_pair(pair_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of the pair with the median time, carrying every pair's time and sha check."""
    ordered = sorted(pair_runs, key=lambda r: float(r["seconds"]))
    run = dict(ordered[len(ordered) // 2])
    run["pair_seconds"] = [r["seconds"] for r in pair_runs]
    run["sha_ok"] = all(r["sha_ok"] for r in pair_runs)
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write results here")
    parser.add_argument("--sizes", default="1,50,200", help="blob sizes in MiB")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--seed", help=argparse.SUPPRESS)
    parser.add_argument("--roster", help=argparse.SUPPRESS)
    parser.add_argument("--addr", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--repeat",
        type=int,
        default=0,
        help="blobs per run over one connection, median reported (default: 9 below 10 MiB, else 1)",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=0,
        help="fresh sender/receiver process pairs per method and round, methods interleaved, "
        "median pair kept (default: 7 below 10 MiB, else 1); a small blob's time moves by "
        "20 %% between one pair of processes and the next, far more than within a pair",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat the whole sweep, methods interleaved; each row is the round with the "
        "median time (a busy machine drifts, and one method after another would catch "
        "the drift unevenly)",
    )
    args = parser.parse_args(argv)

    role = args.role
    if role == "fed-recv":
        asyncio.run(_fed_receiver(args.seed, args.roster, args.repeat))
        return 0
    if role == "fed-send":
        asyncio.run(_fed_sender(args.seed, args.roster, args.addr, args.size, args.repeat))
        return 0
    if role == "bare-recv":
        _bare_receiver(args.seed, args.repeat)
        return 0
    if role == "bare-send":
        _bare_sender(args.seed, args.addr, args.size, args.repeat)
        return 0
    if role == "tcp-recv":
        _tcp_receiver(args.repeat)
        return 0
    if role == "tcp-send":
        _tcp_sender(args.addr, args.size, args.repeat)
        return 0

    import tempfile

    sizes = [int(s) for s in args.sizes.split(",") if s]
    every: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(max(args.rounds, 1)):
            for size in sizes:
                repeat = args.repeat or (9 if size < 10 else 1)
                pairs = args.pairs or (7 if size < 10 else 1)
                by_pair: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
                for _pair in range(pairs):
                    for method in METHODS:
                        by_pair[method].append(run_one(method, size * MB, Path(tmp), repeat))
                for method, pair_runs in by_pair.items():
                    every.setdefault((method, size), []).append(_median_pair(pair_runs))
    runs: list[dict[str, Any]] = []
    for size in sizes:
        for method in METHODS:
            rounds = sorted(every[(method, size)], key=lambda r: float(r["seconds"]))
            row = dict(rounds[len(rounds) // 2])
            row["round_seconds"] = [r["seconds"] for r in every[(method, size)]]
            row["sha_ok"] = all(r["sha_ok"] for r in rounds)
            runs.append(row)
    by = {(r["method"], r["size_mb"]): r for r in runs}
    ratios = []
    paired = []
    rss_ratios = []
    for size in sizes:
        fed, bare, tcp = (by[(m, float(size))] for m in METHODS)
        fed["vs_bare"] = fed["mb_per_s"] / bare["mb_per_s"]
        fed["vs_tcp"] = fed["mb_per_s"] / tcp["mb_per_s"]
        # Same-round ratios: fed and bare ran back to back, so load drift cancels.
        fed["vs_bare_by_round"] = [
            b / f for f, b in zip(fed["round_seconds"], bare["round_seconds"], strict=True)
        ]
        ratios.append(fed["vs_bare"])
        by_round = sorted(fed["vs_bare_by_round"])
        paired.append(by_round[len(by_round) // 2])
        rss_ratios.append(
            max(fed["receiver_rss_growth_mb"], fed["sender_rss_growth_mb"]) / max(size, 1e-9)
        )
    doc = {
        "benchmark": "p2p blob transfer (loopback, two processes)",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "libp2p": version("libp2p"),
            "trio": version("trio"),
        },
        "rounds": max(args.rounds, 1),
        "runs": runs,
        "summary": {
            "blob_vs_bare_ratio": min(ratios),
            # Lowest over sizes of the median same-round ratio (equal to the
            # above with --rounds 1); less sensitive to load drift.
            "blob_vs_bare_ratio_same_round": min(paired),
            "peak_rss_over_blob": max(rss_ratios),
            "peak_rss_over_blob_ge_50mb": max(
                (r for r, size in zip(rss_ratios, sizes, strict=True) if size >= 50), default=None
            ),
            "note": "peak RSS growth includes the sender's own payload copy",
        },
    }
    print(f"{'method':<12} {'MiB':>6} {'MB/s':>8} {'sha':>4} {'recv RSS+':>10} {'send RSS+':>10}")
    for r in runs:
        print(
            f"{r['method']:<12} {r['size_mb']:>6.0f} {r['mb_per_s']:>8.1f} "
            f"{'ok' if r['sha_ok'] else 'BAD':>4} {r['receiver_rss_growth_mb']:>9.1f}M "
            f"{r['sender_rss_growth_mb']:>9.1f}M"
        )
    print(json.dumps(doc["summary"]))
    print(json.dumps(doc["machine"]))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
