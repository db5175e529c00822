"""Every refused outsider shows in ``/api/security``, ``/metrics`` and the alert.

An operator dialled a daemon from a stock js-libp2p client and a Noise dialer with
another key: ``/api/security`` said ``rejected: []``, ``/metrics`` had no sample and
the ``FedswarmRejectingMessages`` alert could never fire; the js client, refused at
multiplexer negotiation, left no trace at all. Here one real daemon (waiting for a
second member, so it spends no CPU on rounds) is dialled on loopback by

* a non-member with a valid Noise handshake (a real ``P2PNode`` with another key),
* a stock-libp2p-like dialer that offers only Mplex (as older js-libp2p does),
* a dialer that offers only plaintext,
* a roster member that gossips a stale heartbeat and one naming another peer,

and the counters by reason, the refusal rows, the Prometheus samples and the alert
expression from docs/operations.md (evaluated over two scrapes, as ``rate()`` over
its window would be) must all show them.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import multiaddr
import pytest
import trio
from fedswarm.daemon.demo.local_federation import LocalFederation, PeerProcess
from fedswarm.p2p.identity import Identity
from fedswarm.p2p.membership import HEARTBEAT_TOPIC, Heartbeat
from fedswarm.p2p.node import NodeConfig, P2PNode
from fedswarm.p2p.roster import Member, Roster
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol, TSecurityOptions
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.mplex.mplex import MPLEX_PROTOCOL_ID, Mplex

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
SAMPLE = re.compile(r'^fedswarm_rejected_messages_total\{reason="([^"]+)"\} (\d+)$', re.M)
ALERT = re.compile(
    r"- alert: FedswarmRejectingMessages\n\s+expr: sum by \(reason\) \(rate\("
    r'fedswarm_rejected_messages_total\{reason!~"([^"]+)"\}\[15m\]\)\) > 0'
)


async def _ignore(*_: Any) -> None:
    return None


def _dial_with(daemon: PeerProcess, *, plaintext: bool) -> str:
    """Dial ``daemon`` from a bare py-libp2p host offering what a foreign client might:
    Noise with Mplex only, or plaintext only. Returns how the dial ended."""
    key_pair = create_new_key_pair()
    security: TSecurityOptions
    if plaintext:
        security = {TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(key_pair)}
    else:
        noise = NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
        security = {TProtocol(NOISE_PROTOCOL_ID): noise}
    host = new_host(key_pair=key_pair, sec_opt=security,
                    muxer_opt={TProtocol(MPLEX_PROTOCOL_ID): Mplex})
    target = multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{daemon.p2p_port}")

    async def go() -> str:
        async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            try:
                with trio.fail_after(15):
                    await host.connect(PeerInfo(ID.from_base58(daemon.peer_id), [target]))
            except Exception as exc:  # the refusal is what we came for
                return type(exc).__name__
            return "connected"

    return trio.run(go)


def _scrape(daemon: PeerProcess) -> dict[str, int]:
    request_text = _get_text(daemon, "/metrics")
    return {reason: int(n) for reason, n in SAMPLE.findall(request_text)}


def _get_text(daemon: PeerProcess, route: str) -> str:
    import urllib.request

    request = urllib.request.Request(
        daemon.api_url + route, headers={"Authorization": f"Bearer {daemon.token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return str(response.read().decode())


def _alert_fires(before: dict[str, int], after: dict[str, int], excluded: str) -> set[str]:
    """The reasons for which ``sum by (reason) (rate(x{reason!~EXCLUDED}[15m])) > 0``
    holds when ``after`` is scraped within 15 minutes of ``before``."""
    matcher = re.compile(excluded)
    return {
        reason for reason, n in after.items()
        if not matcher.fullmatch(reason) and n - before.get(reason, 0) > 0
    }


async def _poll(predicate: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return True
        await asyncio.sleep(0.5)
    return False


async def test_refused_outsiders_and_heartbeats_are_counted_by_reason(tmp_path: Path) -> None:
    fed = LocalFederation(tmp_path, peers=1, rounds=0, secure_aggregation="none",
                          local_steps=1, batch_size=2, wait_for_peers=2,
                          overrides={"federation": {"wait_for_peers_s": 600.0}})
    fed.prepare()
    daemon = fed.peers[0]
    mallory, outsider = Identity.generate(), Identity.generate()
    roster = Roster.load(daemon.directory / "roster.toml").with_member(
        Member("mallory", mallory.peer_id)
    )
    roster.save(daemon.directory / "roster.toml")
    config = NodeConfig(listen="/ip4/127.0.0.1/tcp/0")
    member = P2PNode(mallory, roster, config, on_blob=_ignore, on_gossip=_ignore)
    stranger = P2PNode(outsider, roster.with_member(Member("outsider", outsider.peer_id)),
                       config, on_blob=_ignore, on_gossip=_ignore)
    excluded = ALERT.search(OPERATIONS.read_text())
    assert excluded is not None, "docs/operations.md lost the FedswarmRejectingMessages alert"
    try:
        fed.start()
        assert await _poll(lambda: daemon.try_status() is not None, 120), fed.log_tail(daemon.org)
        before = await asyncio.to_thread(_scrape, daemon)

        await stranger.start()
        await stranger.dial(daemon.multiaddr)  # Noise succeeds; the roster check closes it
        mplex = await asyncio.to_thread(_dial_with, daemon, plaintext=False)
        plain = await asyncio.to_thread(_dial_with, daemon, plaintext=True)
        assert "connected" not in (mplex, plain), (mplex, plain)

        await member.start()
        await member.dial(daemon.multiaddr)
        stale = Heartbeat(mallory.peer_id, "mallory", (), 0, "idle", "", "x",
                          time.time() - 3600)
        forged = Heartbeat(daemon.peer_id, "mallory", (), 0, "idle", "", "x", time.time())

        def heartbeats_counted() -> bool:
            counts = json.loads(_get_text(daemon, "/api/security"))["rejected_counts"]
            return {"heartbeat_stale", "heartbeat_forged"} <= set(counts)

        deadline = time.monotonic() + 30
        while not await asyncio.to_thread(heartbeats_counted) and time.monotonic() < deadline:
            await member.publish(HEARTBEAT_TOPIC, stale.encode())
            await member.publish(HEARTBEAT_TOPIC, forged.encode())
            await asyncio.sleep(1.0)

        expected = {"not_member", "muxer_refused", "security_refused",
                    "heartbeat_stale", "heartbeat_forged"}
        assert await _poll(
            lambda: expected <= set(json.loads(_get_text(daemon, "/api/security"))
                                    ["rejected_counts"]), 20
        ), _get_text(daemon, "/api/security")
        security = json.loads(await asyncio.to_thread(_get_text, daemon, "/api/security"))
        after = await asyncio.to_thread(_scrape, daemon)
    finally:
        await member.stop()
        await stranger.stop()
        codes = fed.stop()
    assert codes[daemon.org] == 0, fed.log_tail(daemon.org)

    rows = {(r["kind"], r["reason"].split(":", 1)[0]): r for r in security["rejected"]}
    assert rows[("connection", "not_member")]["peer_id"] == outsider.peer_id
    assert "127.0.0.1" in rows[("connection", "muxer_refused")]["reason"]
    assert ("connection", "security_refused") in rows
    assert rows[("heartbeat", "heartbeat_forged")]["peer_id"] == mallory.peer_id
    for reason in expected:
        assert after.get(reason, 0) >= 1, (reason, after)
        assert after[reason] == security["rejected_counts"][reason], (reason, after, security)
    fired = _alert_fires(before, after, excluded.group(1))
    assert {"not_member", "muxer_refused", "security_refused", "heartbeat_forged"} <= fired
    # Heartbeats GossipSub queued while a member was away arrive stale after every
    # restart: counted and shown, but not paged on.
    assert "heartbeat_stale" not in fired
    assert not _alert_fires({}, {"heartbeat_stale": 118}, excluded.group(1))
