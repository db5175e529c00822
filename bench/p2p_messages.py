"""What one small message costs: ``P2PNode.send_message`` beside a bare py-libp2p stream.

    python -m bench.p2p_messages --json out.json [--messages 2000] [--blocks 5] [--bytes 300]

Two ``P2PNode`` members in this process on loopback (one connection). Each block sends
``--messages`` payloads of ``--bytes`` one after another and waits until the receiver's
handler has every one; its CPU is this process's (sender and receiver together) over
the block, its wall time the block's. Blocks alternate between the two methods over the
same connection, so the machine's load drifts over both alike:

* ``fedswarm``: ``send_message`` — the signed header, its checks at the receiver, the
  hop from asyncio to the node's trio thread and back, on the kept message stream;
* ``bare_libp2p``: the same number of bytes per message written by a trio task on the
  node's own host to a bare stream, read by a handler that only counts them — what
  py-libp2p's Noise + Yamux cost at the least for the same traffic.

The heartbeats every member sends every other are such messages, so their CPU is what a
large federation's idle cost is made of (docs/reliability.md, "32 members and their
heartbeats"). Prints a table and writes JSON with the machine and versions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from importlib.metadata import version
from typing import Any

from fedswarm.p2p import framing
from fedswarm.p2p.framing import BlobHeader
from fedswarm.p2p.identity import Identity
from fedswarm.p2p.node import NodeConfig, P2PNode
from fedswarm.p2p.roster import Member, Roster
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from .machine import cpu_model

BARE_PROTOCOL = "/bench/bare-messages/1.0.0"
METHODS = ("fedswarm", "bare_libp2p")


class BenchError(Exception):
    """The benchmark could not measure (nodes did not connect, messages went missing)."""


async def _wait_for(predicate: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"gave up after {timeout_s:.0f} s")
        await asyncio.sleep(0.002)


class MessagePair:
    """A sender and a receiver member, with both methods' counters at the receiver."""

    def __init__(self) -> None:
        ids = [Identity.generate(), Identity.generate()]
        roster = Roster("bench-messages", tuple(
            Member(org=f"org{i}", peer_id=ident.peer_id) for i, ident in enumerate(ids)))
        self.received = {"fedswarm": 0, "bare_libp2p": 0}

        async def on_blob(header: BlobHeader, data: bytes) -> None:
            self.received["fedswarm"] += 1

        async def on_gossip(topic: str, sender: str, payload: bytes) -> None:
            pass

        self.receiver = P2PNode(ids[0], roster, NodeConfig(), on_blob=on_blob,
                                on_gossip=on_gossip)
        self.sender = P2PNode(ids[1], roster, NodeConfig(), on_blob=on_blob,
                              on_gossip=on_gossip)
        self._bare_stream: Any = None

    async def start(self, message_bytes: int) -> None:
        await self.receiver.start()
        await self.sender.start()
        await self.receiver._call(self._serve_bare, message_bytes)
        await self.sender.dial(self.receiver.listen_addrs[0])
        await _wait_for(lambda: self.receiver.peer_id in self.sender.connected_peers()
                        and self.sender.peer_id in self.receiver.connected_peers(), 15)

    async def stop(self) -> None:
        await self.sender.stop()
        await self.receiver.stop()

    async def _serve_bare(self, message_bytes: int) -> None:
        """On the receiver's trio thread: a handler that counts whole messages."""

        async def handler(stream: Any) -> None:
            pending = 0
            while True:
                chunk = await stream.read(65536)
                if not chunk:
                    return
                pending += len(chunk)
                whole, pending = divmod(pending, message_bytes)
                self.received["bare_libp2p"] += whole

        host = self.receiver._host
        assert host is not None
        host.set_stream_handler(TProtocol(BARE_PROTOCOL), handler)

    async def _bare_write(self, data: bytes) -> None:
        """On the sender's trio thread: one write on a kept bare stream."""
        if self._bare_stream is None:
            host = self.sender._host
            assert host is not None
            self._bare_stream = await host.new_stream(ID.from_base58(self.receiver.peer_id),
                                                      [TProtocol(BARE_PROTOCOL)])
        await self._bare_stream.write(data)

    async def block(self, method: str, count: int, payload: bytes,
                    wire_bytes: int) -> dict[str, float]:
        """Send ``count`` messages by ``method``; CPU and wall per message, in ms."""
        start_count = self.received[method]
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(count):
            if method == "fedswarm":
                await self.sender.send_message(self.receiver.peer_id, "bench", 1, payload)
            else:
                await self.sender._call(self._bare_write, b"\0" * wire_bytes)
        await _wait_for(lambda: self.received[method] >= start_count + count, 120)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        return {"cpu_ms": 1000 * cpu / count, "wall_ms": 1000 * wall / count}


def wire_bytes_of(payload_bytes: int, pair: MessagePair) -> int:
    """What one ``send_message`` of this payload puts on the stream (header frame + body)."""
    header = BlobHeader(federation_id="bench-messages", sender=pair.sender.peer_id,
                        recipient=pair.receiver.peer_id, kind="bench", round=1,
                        length=payload_bytes, sha256=b"\0" * 32, sent_at=time.time())
    return len(framing.encode_signed_header(header, pair.sender.identity)) + payload_bytes


async def run(messages: int, blocks: int, payload_bytes: int) -> dict[str, Any]:
    pair = MessagePair()
    payload = b"x" * payload_bytes
    wire = wire_bytes_of(payload_bytes, pair)
    await pair.start(wire)
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
    try:
        for method in METHODS:  # warm-up: streams opened, code paths hot
            await pair.block(method, 50, payload, wire)
        for index in range(blocks):
            order = METHODS if index % 2 == 0 else METHODS[::-1]
            for method in order:
                runs[method].append(await pair.block(method, messages, payload, wire))
    finally:
        await pair.stop()
    cpu = {m: statistics.median(r["cpu_ms"] for r in runs[m]) for m in METHODS}
    rows = {m: {"cpu_ms_per_message": cpu[m],
                "wall_ms_per_message": statistics.median(r["wall_ms"] for r in runs[m]),
                "blocks": runs[m]} for m in METHODS}
    return {
        "benchmark": "p2p_messages",
        "command": " ".join(["python -m bench.p2p_messages", *sys.argv[1:]]),
        "messages_per_block": messages, "blocks": blocks, "payload_bytes": payload_bytes,
        "wire_bytes_per_message": wire,
        "methods": rows,
        "summary": {
            "fedswarm_cpu_ms_per_message": cpu["fedswarm"],
            "bare_cpu_ms_per_message": cpu["bare_libp2p"],
            "fedswarm_over_bare_cpu": cpu["fedswarm"] / cpu["bare_libp2p"],
        },
        "machine": {"cpu": cpu_model(), "python": sys.version.split()[0],
                    "versions": {p: version(p) for p in ("libp2p", "trio", "pynacl")}},
    }


def table(result: dict[str, Any]) -> str:
    lines = [f"{'method':<12} {'CPU ms/msg':>10} {'wall ms/msg':>11}   (median of "
             f"{result['blocks']} blocks x {result['messages_per_block']} messages, "
             f"{result['wire_bytes_per_message']} bytes on the wire each)"]
    for name, row in result["methods"].items():
        lines.append(f"{name:<12} {row['cpu_ms_per_message']:>10.3f} "
                     f"{row['wall_ms_per_message']:>11.3f}")
    lines.append(f"fedswarm / bare CPU: {result['summary']['fedswarm_over_bare_cpu']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per block")
    parser.add_argument("--blocks", type=int, default=5, help="blocks per method")
    parser.add_argument("--bytes", type=int, default=300, help="payload bytes per message")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.blocks < 1 or not 1 <= args.bytes <= 200_000:
        parser.error("--messages and --blocks must be >= 1, --bytes in 1..200000")
    try:
        result = asyncio.run(run(args.messages, args.blocks, args.bytes))
    except BenchError as exc:
        print(f"p2p_messages benchmark: {exc}", file=sys.stderr)
        return 2
    print(table(result))
    print(f"machine: {result['machine']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
