"""Blob transfer benchmark: P2PNode.send_blob vs a bare py-libp2p stream vs plain TCP.

    python -m bench.p2p --json out.json [--sizes 1,50,200] [--rounds 3]

For every size and method a fresh receiver and sender *process* pair moves the
same number of random bytes over loopback; the receiver keeps the whole blob in
memory (as the daemon does) and acknowledges. Reported per run: MB/s (sender
clock, from first byte to ack), and each process's peak RSS growth over its
RSS just before the transfer (VmHWM is a high-water mark, hence one process
pair per run), taken after one untimed 1 KiB warm-up blob so that it counts
the blobs and not the connection. The sender's growth includes its own copy
of the payload. Blobs under 10 MiB are sent 9 times per pair (median) by 7
pairs per method, larger blobs once by 3 pairs (median pair, methods
interleaved): one pair's time moves by about 20 % from the next pair's, which
is more than the difference being measured. So the headline ratio comes
from a second kind of pair: one receiver and one sender process, both
methods alternating over one connection (send_blob and a bare stream on the
node's own host), where that spread cancels.
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
from typing import TYPE_CHECKING, Any

from . import child_env, module_command

if TYPE_CHECKING:  # imported where used: the TCP children never load libp2p
    from collections.abc import Awaitable, Callable

    from fedswarm.p2p.framing import BlobHeader
    from fedswarm.p2p.node import P2PNode

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


_WARMUP_BYTES = 1024


def _rebase_rss() -> float | None:
    """Reset this process's high-water mark to its RSS now and return that RSS.

    Each pair first moves one small warm-up blob, untimed; the baseline is taken
    after it, so the growth counts the blobs and not the connection (Noise and
    Yamux state, identify, GossipSub), lazily imported code or the first
    stream's buffers, which every method's receiver paid before its baseline
    was moved here. Linux resets VmHWM on ``echo 5 > /proc/self/clear_refs``;
    where that is refused, None, and the caller keeps its baseline from before
    the connection (a larger growth, never a smaller one).
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return None
    return _rss_mb()


def _emit(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- fedswarm method


def _bench_node(
    seed: str,
    roster_path: str,
    on_blob: Callable[[BlobHeader, bytes], Awaitable[None]] | None = None,
) -> P2PNode:
    """A P2PNode for the benchmark: 2 GiB blob limit, 10-minute timeout, gossip ignored."""
    from fedswarm.p2p.identity import Identity
    from fedswarm.p2p.node import NodeConfig, P2PNode
    from fedswarm.p2p.roster import Roster

    async def ignore_blob(header: BlobHeader, data: bytes) -> None:
        pass

    async def ignore_gossip(topic: str, sender: str, payload: bytes) -> None:
        pass

    return P2PNode(
        Identity(bytes.fromhex(seed)),
        Roster.load(Path(roster_path)),
        NodeConfig(max_blob_bytes=2**31, blob_timeout_s=600),
        on_blob=on_blob or ignore_blob,
        on_gossip=ignore_gossip,
    )


async def _stop_when_alone(node: Any, limit_s: float = 5.0) -> None:
    """Stop a receiving node once the sender has hung up (it has every ack by then).

    Stopping earlier could cut the last ack off; waiting a fixed time instead
    let the node's reconnect loop dial the departed sender and log py-libp2p's
    "Failed to open TCP stream" into the benchmark's output.
    """
    deadline = time.monotonic() + limit_s
    while node.connected_peers() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await node.stop()


async def _fed_receiver(seed: str, roster_path: str, repeat: int) -> None:
    done = asyncio.Event()
    result: dict[str, Any] = {}
    last: list[tuple[BlobHeader, bytes]] = []

    async def on_blob(header: BlobHeader, data: bytes) -> None:
        if header.kind == "warmup":
            rebased = _rebase_rss()
            if rebased is not None:
                result["base_rss_mb"], result["rss_base"] = rebased, "after warm-up"
            return
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

    node = _bench_node(seed, roster_path, on_blob)
    await node.start()
    result["base_rss_mb"], result["rss_base"] = _rss_mb(), "before connection"
    _emit({"addr": node.listen_addrs[0]})
    await done.wait()
    header, data = last[0]
    digest = await asyncio.to_thread(lambda: hashlib.sha256(data).digest())
    ok = result["ok"] and digest == header.sha256
    _emit(
        {
            "ok": ok,
            "base_rss_mb": result["base_rss_mb"],
            "rss_base": result["rss_base"],
            "peak_rss_mb": result["peak_rss_mb"],
        }
    )
    await _stop_when_alone(node)


async def _fed_sender(seed: str, roster_path: str, addr: str, size: int, repeat: int) -> None:
    node = _bench_node(seed, roster_path)
    await node.start()
    peer = await node.dial(addr)
    base = _rss_mb()
    await node.send_blob(peer, "warmup", 0, os.urandom(_WARMUP_BYTES))
    base = _rebase_rss() or base
    payload = os.urandom(size)
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        await node.send_blob(peer, "bench", i, payload)
        times.append(time.perf_counter() - start)
    _emit({"times": times, "base_rss_mb": base, "peak_rss_mb": _peak_rss_mb()})
    await node.stop()


# ---------------------------------------------------------------- bare libp2p method


async def _bare_read(stream: Any) -> tuple[bytes, bytes, bytes]:
    """Read one bare blob (length, sha256, body); (body, its sha256, the claimed sha256).

    The caller acks with one byte. The hash runs chunk by chunk as the body
    arrives, as ``P2PNode``'s receiver does. A stream that ends early gives a
    short body whose sha256 fails the caller's check (nothing raises inside a
    py-libp2p stream handler).
    """
    head = b""
    while len(head) < 40:
        part = await stream.read(40 - len(head))
        if not part:
            return b"", b"", b"truncated header"
        head += part
    (size,) = struct.unpack(">Q", head[:8])
    buf, digest, got = io.BytesIO(), hashlib.sha256(), 0
    while got < size:
        chunk = await stream.read(min(_BARE_CHUNK, size - got))
        if not chunk:
            break
        buf.write(chunk)
        digest.update(chunk)
        got += len(chunk)
    return buf.getvalue(), digest.digest(), head[8:]


async def _bare_write(host: Any, peer: Any, payload: bytes) -> Any:
    """Send one bare blob up to its ack; returns the stream for the caller to close, untimed."""
    from libp2p.custom_types import TProtocol

    digest = hashlib.sha256(payload).digest()  # the same work as send_blob
    stream = await host.new_stream(peer, [TProtocol(_BARE_PROTOCOL)])
    await stream.write(struct.pack(">Q", len(payload)) + digest)
    view = memoryview(payload)
    for off in range(0, len(payload), _BARE_CHUNK):
        await stream.write(bytes(view[off : off + _BARE_CHUNK]))
    await stream.read(1)
    return stream


def _bare_receiver(seed: str, repeat: int) -> None:
    import multiaddr
    import trio
    from fedswarm.p2p.host import build_host
    from fedswarm.p2p.identity import Identity
    from libp2p.custom_types import TProtocol

    async def main() -> None:
        host = build_host(Identity(bytes.fromhex(seed)), ["/ip4/127.0.0.1/tcp/0"])
        finished = trio.Event()
        out: dict[str, Any] = {"ok": True, "count": 0, "warm": False}

        async def handler(stream: Any) -> None:
            data, digest, claimed = await _bare_read(stream)
            if not out["warm"]:
                out["warm"] = True
                rebased = _rebase_rss()
                if rebased is not None:
                    out["base"], out["rss_base"] = rebased, "after warm-up"
                await stream.write(b"k")
                await stream.close()
                return
            out["ok"] = out["ok"] and digest == claimed
            out["peak"] = _peak_rss_mb()
            del data  # held until the peak was read, as P2PNode holds a blob until its handler
            await stream.write(b"k")
            await stream.close()
            out["count"] += 1
            if out["count"] >= repeat:
                finished.set()

        async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            host.set_stream_handler(TProtocol(_BARE_PROTOCOL), handler)
            out["base"], out["rss_base"] = _rss_mb(), "before connection"
            _emit({"addr": str(host.get_addrs()[0])})
            await finished.wait()
            _emit(
                {
                    "ok": out["ok"],
                    "base_rss_mb": out["base"],
                    "rss_base": out["rss_base"],
                    "peak_rss_mb": out["peak"],
                }
            )
            await trio.sleep(0.5)

    trio.run(main)


def _bare_sender(seed: str, addr: str, size: int, repeat: int) -> None:
    import multiaddr
    import trio
    from fedswarm.p2p.host import build_host
    from fedswarm.p2p.identity import Identity
    from libp2p.peer.id import ID
    from libp2p.peer.peerinfo import PeerInfo

    async def main() -> None:
        host = build_host(Identity(bytes.fromhex(seed)))
        async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            m = multiaddr.Multiaddr(addr)
            pid = ID.from_base58(m.value_for_protocol("p2p"))
            await host.connect(PeerInfo(pid, [m.decapsulate(multiaddr.Multiaddr(f"/p2p/{pid}"))]))
            async def send(payload: bytes) -> Any:
                return await _bare_write(host, pid, payload)

            base = _rss_mb()
            await (await send(os.urandom(_WARMUP_BYTES))).close()
            base = _rebase_rss() or base
            payload = os.urandom(size)
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                stream = await send(payload)
                times.append(time.perf_counter() - start)
                await stream.close()
            _emit({"times": times, "base_rss_mb": base, "peak_rss_mb": _peak_rss_mb()})

    trio.run(main)


# ---------------------------------------------------------------- paired: both on one connection


def _node_host(node: Any) -> Any:
    """The libp2p host inside a running P2PNode. With ``P2PNode._call`` (to run
    the bare stream on the node's trio thread) the benchmark's only reach inside."""
    return node._host


async def _pair_receiver(seed: str, roster_path: str, repeat: int) -> None:
    """A P2PNode that also serves the bare protocol on its own host and connection."""
    from libp2p.custom_types import TProtocol

    counts = {"fed": 0, "bare": 0}
    ok = {"ok": True}
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def count(method: str, good: bool) -> None:
        ok["ok"] = ok["ok"] and good
        counts[method] += 1
        if counts["fed"] > repeat and counts["bare"] > repeat:  # each method's warm-up too
            done.set()

    async def on_blob(header: BlobHeader, data: bytes) -> None:
        # P2PNode checked the sha256 before this call; the bare handler checks its own.
        count("fed", len(data) == header.length)

    async def bare_handler(stream: Any) -> None:
        data, digest, claimed = await _bare_read(stream)
        await stream.write(b"k")
        await stream.close()
        good = digest == claimed
        del data
        loop.call_soon_threadsafe(count, "bare", good)

    node = _bench_node(seed, roster_path, on_blob)
    await node.start()
    _node_host(node).set_stream_handler(TProtocol(_BARE_PROTOCOL), bare_handler)
    _emit({"addr": node.listen_addrs[0]})
    await done.wait()
    _emit({"ok": ok["ok"]})
    await _stop_when_alone(node)


async def _pair_sender(
    seed: str, roster_path: str, addr: str, size: int, repeat: int, bare_first: bool
) -> None:
    """Alternate send_blob and a bare stream over one connection, each timed from asyncio.

    Both cross the same asyncio -> trio bridge; only what P2PNode adds on the
    stream (signed header, accept, handler hand-off, ack) differs.
    """
    from libp2p.peer.id import ID

    node = _bench_node(seed, roster_path)
    await node.start()
    peer = await node.dial(addr)
    host, pid = _node_host(node), ID.from_base58(peer)

    async def bare(payload: bytes) -> Any:
        return await node._call(_bare_write, host, pid, payload)

    async def close(stream: Any) -> None:
        await node._call(stream.close)

    await node.send_blob(peer, "warmup", 0, os.urandom(_WARMUP_BYTES))
    await close(await bare(os.urandom(_WARMUP_BYTES)))
    payload = os.urandom(size)
    times: dict[str, list[float]] = {"fed": [], "bare": []}
    for i in range(repeat):
        order = ("bare", "fed") if (i % 2 == 0) == bare_first else ("fed", "bare")
        for method in order:
            start = time.perf_counter()
            if method == "fed":
                await node.send_blob(peer, "bench", i, payload)
                times["fed"].append(time.perf_counter() - start)
            else:
                stream = await bare(payload)
                times["bare"].append(time.perf_counter() - start)
                await close(stream)
    _emit({"times": times})
    await node.stop()


def run_paired(size: int, workdir: Path, repeat: int, bare_first: bool) -> dict[str, Any]:
    """One process pair, both methods alternating on one connection; medians and their ratio."""
    from fedswarm.p2p.identity import Identity
    from fedswarm.p2p.roster import Member, Roster

    recv_id, send_id = Identity.generate(), Identity.generate()
    roster_path = workdir / "roster.toml"
    Roster("bench", (Member("r", recv_id.peer_id), Member("s", send_id.peer_id))).save(roster_path)
    common = ["--roster", str(roster_path), "--repeat", str(repeat)]
    sargs = ["--role", "pair-send", "--seed", send_id.seed.hex(), "--size", str(size), *common]
    sent, received = _run_processes(
        ["--role", "pair-recv", "--seed", recv_id.seed.hex(), *common],
        sargs + (["--bare-first"] if bare_first else []),
    )
    fed, bare = (sorted(sent["times"][m])[repeat // 2] for m in ("fed", "bare"))
    return {"fed_seconds": fed, "bare_seconds": bare, "ratio": bare / fed, "sha_ok": received["ok"]}


# ---------------------------------------------------------------- plain TCP method


def _tcp_receive_one(srv: socket.socket) -> tuple[bool, float]:
    """Accept one connection, read and check one blob, ack; (sha256 ok, peak RSS)."""
    conn, _ = srv.accept()
    with conn:
        head = b""
        while len(head) < 40:
            part = conn.recv(40 - len(head))
            if not part:
                return False, _peak_rss_mb()
            head += part
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
        ok = digest.digest() == head[8:] and len(data) == size
        peak = _peak_rss_mb()
        conn.sendall(b"k")
    return ok, peak


def _tcp_receiver(repeat: int) -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    base, rss_base = _rss_mb(), "before connection"
    _emit({"addr": f"127.0.0.1:{srv.getsockname()[1]}"})
    _tcp_receive_one(srv)  # the warm-up
    rebased = _rebase_rss()
    if rebased is not None:
        base, rss_base = rebased, "after warm-up"
    ok, peak = True, 0.0
    for _ in range(repeat):  # one connection per blob, like one stream per blob
        blob_ok, peak = _tcp_receive_one(srv)
        ok = ok and blob_ok
    _emit({"ok": ok, "base_rss_mb": base, "rss_base": rss_base, "peak_rss_mb": peak})


def _tcp_send_one(host: str, port: int, payload: bytes) -> socket.socket:
    """One blob up to its ack; the caller closes the socket, untimed."""
    sock = socket.create_connection((host, port))
    digest = hashlib.sha256(payload).digest()
    sock.sendall(struct.pack(">Q", len(payload)) + digest)
    sock.sendall(payload)
    sock.recv(1)
    return sock


def _tcp_sender(addr: str, size: int, repeat: int) -> None:
    host, port = addr.rsplit(":", 1)
    base = _rss_mb()
    _tcp_send_one(host, int(port), os.urandom(_WARMUP_BYTES)).close()
    base = _rebase_rss() or base
    payload = os.urandom(size)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        sock = _tcp_send_one(host, int(port), payload)
        times.append(time.perf_counter() - start)
        sock.close()
    _emit({"times": times, "base_rss_mb": base, "peak_rss_mb": _peak_rss_mb()})


# ---------------------------------------------------------------- orchestration


def _child(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        module_command("p2p", *args),
        env=child_env(),
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


def _run_processes(
    receiver_args: list[str], sender_args: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start a receiver, then a sender told its address; (sender's report, receiver's report)."""
    receiver = _child(receiver_args)
    sender: subprocess.Popen[str] | None = None
    try:
        addr = _read_json(receiver)["addr"]
        sender = _child([*sender_args, "--addr", addr])
        sent = _read_json(sender)
        received = _read_json(receiver)
        sender.wait(timeout=60)
        receiver.wait(timeout=60)
    finally:
        for proc in (receiver, sender):
            if proc is not None and proc.poll() is None:
                proc.kill()
    return sent, received


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
    sargs = ["--size", str(size), "--repeat", str(repeat)]
    if method == "fedswarm":
        sargs += ["--role", "fed-send", "--seed", send_id.seed.hex(), "--roster", str(roster_path)]
    elif method == "bare_libp2p":
        sargs += ["--role", "bare-send", "--seed", send_id.seed.hex()]
    else:
        sargs += ["--role", "tcp-send"]
    sent, received = _run_processes(rargs, sargs)
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
        "rss_base": received["rss_base"],
    }


_RSS_KEYS = ("receiver_rss_growth_mb", "sender_rss_growth_mb")


def _median_run(runs: list[dict[str, Any]], times_key: str) -> dict[str, Any]:
    """The run with the median time, carrying every run's time, all sha checks and
    the *highest* RSS growth of any run (a memory target is met by the worst run,
    not the typical one)."""
    ordered = sorted(runs, key=lambda r: float(r["seconds"]))
    run = dict(ordered[len(ordered) // 2])
    run[times_key] = [r["seconds"] for r in runs]
    run["sha_ok"] = all(r["sha_ok"] for r in runs)
    for key in _RSS_KEYS:
        run[key] = max(float(r[key]) for r in runs)
    run["rss_base"] = ", ".join(sorted({str(r["rss_base"]) for r in runs}))
    return run


def _same_connection_row(size: int, pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every paired run of one size, reduced to the median pair (by its ratio)."""
    ordered = sorted(pairs, key=lambda r: float(r["ratio"]))
    mid = ordered[len(ordered) // 2]
    return {
        "size_mb": float(size),
        "ratio": mid["ratio"],
        "fed_mb_per_s": size / mid["fed_seconds"],
        "bare_mb_per_s": size / mid["bare_seconds"],
        "pair_ratios": [r["ratio"] for r in pairs],
        "pair_fed_seconds": [r["fed_seconds"] for r in pairs],
        "pair_bare_seconds": [r["bare_seconds"] for r in pairs],
        "sha_ok": all(r["sha_ok"] for r in pairs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write results here")
    parser.add_argument("--sizes", default="1,50,200", help="blob sizes in MiB")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--seed", help=argparse.SUPPRESS)
    parser.add_argument("--roster", help=argparse.SUPPRESS)
    parser.add_argument("--addr", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bare-first", action="store_true", help=argparse.SUPPRESS)
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
        "median pair kept (default: 7 below 10 MiB, else 3); a blob's time moves by "
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
    if role == "pair-recv":
        asyncio.run(_pair_receiver(args.seed, args.roster, args.repeat))
        return 0
    if role == "pair-send":
        asyncio.run(
            _pair_sender(
                args.seed, args.roster, args.addr, args.size, args.repeat, args.bare_first
            )
        )
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
    same_connection: dict[int, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(max(args.rounds, 1)):
            for size in sizes:
                repeat = args.repeat or (9 if size < 10 else 1)
                pairs = args.pairs or (7 if size < 10 else 3)
                by_pair: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
                for _pair in range(pairs):
                    for method in METHODS:
                        by_pair[method].append(run_one(method, size * MB, Path(tmp), repeat))
                for method, pair_runs in by_pair.items():
                    every.setdefault((method, size), []).append(
                        _median_run(pair_runs, "pair_seconds")
                    )
                for pair in range(pairs):
                    same_connection.setdefault(size, []).append(
                        run_paired(size * MB, Path(tmp), repeat, bare_first=pair % 2 == 1)
                    )
    runs: list[dict[str, Any]] = []
    for size in sizes:
        for method in METHODS:
            runs.append(_median_run(every[(method, size)], "round_seconds"))
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
    connection_rows = [_same_connection_row(size, same_connection[size]) for size in sizes]
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
        "same_connection": connection_rows,
        "summary": {
            # Lowest over sizes of the median pair's ratio, both methods
            # alternating on one connection between one pair of processes.
            "blob_vs_bare_ratio": min(r["ratio"] for r in connection_rows),
            # The same from the separate process pairs of the runs table: exposed
            # to the 20 % pair-to-pair spread the paired runs cancel.
            "blob_vs_bare_ratio_separate_processes": min(ratios),
            # Lowest over sizes of the median same-round ratio of the separate
            # process pairs (equal to the above with --rounds 1).
            "blob_vs_bare_ratio_same_round": min(paired),
            "sha_ok": all(r["sha_ok"] for r in runs)
            and all(r["sha_ok"] for r in connection_rows),
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
    print()
    print("same connection, alternating (median pair)")
    print(f"{'MiB':>6} {'fedswarm MB/s':>14} {'bare MB/s':>10} {'ratio':>6}  every pair's ratio")
    for row in connection_rows:
        print(
            f"{row['size_mb']:>6.0f} {row['fed_mb_per_s']:>14.1f} {row['bare_mb_per_s']:>10.1f} "
            f"{row['ratio']:>6.3f}  {' '.join(f'{r:.2f}' for r in row['pair_ratios'])}"
        )
    print()
    print(json.dumps(doc["summary"]))
    print(json.dumps(doc["machine"]))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
