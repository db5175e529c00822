"""Test scaffolding for the dashboard: an in-memory ``DaemonView`` and a client factory.

The fake view is plain data; everything else under test (aiohttp server, auth,
SSE, static files, and in the browser tests Chromium) is real.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from fedswarm.webui.app import create_app
from fedswarm.webui.config import DashboardConfig

TOKEN = "test-token-0123456789abcdef"
HOSTILE_ORG = "<script>alert('org')</script><img src=x onerror=alert(1)>"


class FakeView:
    """A ``DaemonView`` over dictionaries the test can change, with real asyncio queues."""

    def __init__(self) -> None:
        now = time.time()
        self.round = 3
        self.queues: list[asyncio.Queue[dict[str, Any]]] = []
        self.fail = False
        self.history: list[dict[str, Any]] = [
            {"type": "round_started", "ts": now - 60, "round": 3},
            {"type": "state", "ts": now - 30, "state": "training", "round": 3},
        ]
        self.status: dict[str, Any] = {
            "org": "org-1-news",
            "federation_id": "fed-test",
            "peer_id": "12D3KooWSelf000000000000000000000000000000000000001",
            "round": self.round,
            "state": "training",
            "uptime_s": 125.0,
            "version": "0.1.0",
            "device": "CPU (x86_64)",
            "secure_aggregation": "bfv-mask-shamir-v2",
            "mode": "lora_avg",
            "rounds_target": 5,
            "rounds_completed": 2,
            "peers_up": 2,
            "eval_loss_start": 4.2,
            "eval_loss_last": 3.1,
            "adapter_fingerprint": "ab12cd34ef56",
            "listen_addrs": ["/ip4/127.0.0.1/tcp/4001"],
            "privacy": {
                "enabled": True, "epsilon_spent": 1.25, "epsilon_target": 3.0,
                "epsilon_remaining": 1.75, "delta": 0.0025, "steps": 45,
                "noise_multiplier": 1.0, "sample_rate": 0.02, "max_grad_norm": 1.0,
                "accountant": "Opacus RDP", "training_stopped": False,
                "not_covered": ["eval set: <img src=x onerror=alert(3)>"],
            },
        }
        self.peer_list: list[dict[str, Any]] = [
            {
                "org": "org-1-news",
                "peer_id": "12D3KooWSelf000000000000000000000000000000000000001",
                "addrs": ["/ip4/127.0.0.1/tcp/4001"],
                "last_seen": now,
                "latency_ms": None,
                "round": 3,
                "state": "training",
                "fingerprint": "ab12cd34ef56",
                "version": "0.1.0",
                "up": True,
                "is_self": True,
            },
            {
                "org": HOSTILE_ORG,
                "peer_id": "12D3KooWPeerB00000000000000000000000000000000000002",
                "addrs": ["/ip4/127.0.0.1/tcp/4002"],
                "last_seen": now - 2,
                "latency_ms": 1.5,
                "round": 3,
                "state": "training",
                "fingerprint": "ffee",
                "version": "0.1.0",
                "up": True,
                "is_self": False,
            },
            {
                "org": "org-3-code",
                "peer_id": "12D3KooWPeerC00000000000000000000000000000000000003",
                "addrs": ["/ip4/127.0.0.1/tcp/4003"],
                "last_seen": now - 1,
                "latency_ms": 2.5,
                "round": 3,
                "state": "aggregating",
                "fingerprint": "0011",
                "version": "0.1.0",
                "up": True,
                "is_self": False,
            },
        ]
        self.round_log: list[dict[str, Any]] = [
            {
                "round": r,
                "status": "complete",
                "members": [p["peer_id"] for p in self.peer_list],
                "aggregator": self.peer_list[1]["peer_id"],
                "decryptor": self.peer_list[2]["peer_id"],
                "survivors": [p["peer_id"] for p in self.peer_list],
                "dropped": [],
                "bytes_sent": 1000 * r,
                "bytes_received": 2000 * r,
                "train_s": 1.0,
                "aggregate_s": 0.5,
                "apply_s": 0.1,
                "apply_parts": {"apply": 0.01, "eval": 0.05, "samples": 0.02,
                                "checkpoint": 0.015, "publish": 0.001},
                "train_loss": 4.0 - r * 0.4,
                "eval_loss_before": 4.1 - r * 0.4,
                "eval_loss_after": 4.0 - r * 0.45,
                "protocol": "bfv-mask-shamir-v2",
                "staleness": 0,
                "note": None if r == 1 else (
                    "secure aggregation failed: only 2 members shared keys; a sum needs 3 "
                    "contributors before anything is revealed"),
            }
            for r in (1, 2)
        ]
        self.train: dict[str, Any] = {
            "steps": [
                {"round": r, "step": s, "loss": 4.0 - 0.1 * s - 0.3 * r, "ts": now}
                for r in (1, 2)
                for s in range(3)
            ],
            "rounds": [
                {
                    "round": r["round"],
                    "train_loss": r["train_loss"],
                    "eval_loss_before": r["eval_loss_before"],
                    "eval_loss_after": r["eval_loss_after"],
                }
                for r in self.round_log
            ],
            "samples": [{"round": 2, "prompt": "Hello <b>", "output": "<script>alert(2)</script>"}],
            "eval_loss_start": 4.2,
        }
        self.sec: dict[str, Any] = {
            "federation_id": "fed-test",
            "roster": [
                {"org": p["org"], "peer_id": p["peer_id"], "key_fingerprint": "fp" + str(i)}
                for i, p in enumerate(self.peer_list)
            ],
            "roster_fingerprint": "rosterfp",
            "secure_aggregation": {
                "protocol": "bfv-mask-shamir-v2",
                "poly_modulus_degree": 4096,
                "coeff_mod_bit_sizes": [60, 49],
                "plain_modulus_bits": 30,
                "security_bits": 128,
                "threshold_rule": "t = floor(k/2) + 1",
            },
            "transport": "TCP + Noise XX + Yamux",
            "rejected": [
                {"ts": now, "peer_id": "12D3KooWEvil", "kind": "blob", "reason": "not on roster"}
            ],
            "rejected_counts": {"blob": 1},
        }

        me, peer_b, peer_c = (p["peer_id"] for p in self.peer_list)
        orgs = {p["peer_id"]: p["org"] for p in self.peer_list}
        self.mkt: dict[str, Any] = {
            "enabled": False,
            "peer_id": me,
            "org": orgs[me],
            "own_loss_start": 4.0,
            "own_loss_latest": 2.2,
            "rounds": [
                {
                    "round": 1,
                    "status": "complete",
                    "student": me,
                    "student_org": orgs[me],
                    "edges": [
                        {"teacher": t, "teacher_org": orgs[t], "student": me,
                         "student_org": orgs[me]}
                        for t in (peer_b, peer_c)
                    ],
                    "aligned_fraction": 0.62,
                    "public_losses": [
                        {"peer_id": p, "org": orgs[p], "loss": loss}
                        for p, loss in ((me, 3.25), (peer_b, 2.5), (peer_c, math.nan))
                    ],
                    "own_loss_before": 2.0,
                    "own_loss_after": 2.2,
                    "own_loss_change": 0.1,
                    "dropped": [],
                    "distill": {"steps": 4, "first_loss": 3.1, "last_loss": 2.9},
                    "note": "fedmkt: learnt from two peers (62% positions aligned)",
                    "exchange": "secure",
                }
            ],
        }

        self.kseed: dict[str, Any] = {
            "enabled": False,
            "k": 1024,
            "rounds": [
                {"round": 1, "status": "complete", "bytes_sent": 16416, "bytes_received": 16416,
                 "train_loss": 0.81, "eval_loss_after": 0.84, "group": 3, "seeds_used": 88,
                 "clipped": 0, "replay_s": 0.2, "parameters_fingerprint": "0123456789abcdef"},
                {"round": 2, "status": "local_only", "bytes_sent": None, "bytes_received": None,
                 "train_loss": 0.8, "eval_loss_after": 0.83, "group": None, "seeds_used": None,
                 "clipped": None, "replay_s": None, "parameters_fingerprint": None},
            ],
        }

        self.off: dict[str, Any] = {
            "enabled": False,
            "role": "member",
            "owner": "12D3KooWowner",
            "owner_org": "org-0-bank",
            "package_id": "ab" * 32,
            "package": {
                "package_id": "ab" * 32, "bytes": 123456, "files": 9, "layers_total": 8,
                "layers_in_package": 6, "adapter_layers": {"bottom": 2, "top": 2},
                "middle_layers": 4, "middle_kept": 2, "kept_middle": [2, 4],
                "never_sent": [3, 5], "distill_steps": 50,
            },
            "reveals": "Members hold 6 of the owner's 8 layers: layers 3, 5 never leave the owner.",
            "fetch": {"state": "verified", "bytes_fetched": 123456, "bytes_total": 123456},
            "owner_state": None,
            "rounds": [
                {"round": 1, "status": "complete", "eval_loss_before": 0.96,
                 "eval_loss_after": 0.81, "train_loss": 0.9, "bytes_sent": 5000,
                 "bytes_received": 4000, "survivors": 3, "plugged_in": None,
                 "confirmed_by": None},
            ],
        }

        self.eval: dict[str, Any] = {
            "enabled": True, "every_rounds": 1, "max_rows": 32,
            "results": [
                {"round": r, "ts": now, "name": "qa", "path": "/data/qa.jsonl", "kind": "set",
                 "format": "instruction", "rows": 20, "loss": loss, "perplexity": math.exp(loss),
                 "exact_match": em, "rouge_l": rl, "refusal_rate": None}
                for r, loss, em, rl in ((1, 2.0, 0.1, 0.3), (2, 1.5, 0.25, 0.45))
            ] + [
                {"round": 2, "ts": now, "name": "<b>should-refuse</b>", "path": "/data/r.jsonl",
                 "kind": "refusal", "format": "prompt", "rows": 8, "loss": None,
                 "perplexity": None, "exact_match": None, "rouge_l": None,
                 "refusal_rate": 0.75},
            ],
        }

    # -- DaemonView ---------------------------------------------------------------------
    def overview(self) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("view broke")
        return {**self.status, "round": self.round}

    def peers(self) -> list[dict[str, Any]]:
        return self.peer_list

    def rounds(self, limit: int = 200) -> list[dict[str, Any]]:
        return self.round_log[-limit:]

    def training(self) -> dict[str, Any]:
        return self.train

    def evaluation(self) -> dict[str, Any]:
        return self.eval

    def security(self) -> dict[str, Any]:
        return self.sec

    def traffic(self) -> dict[str, Any]:
        return {
            "bytes_sent": 3000,
            "bytes_received": 6000,
            "blobs_sent": 4,
            "blobs_received": 8,
            "per_round": [],
            "odd": math.nan,
        }

    def fedmkt(self) -> dict[str, Any]:
        return self.mkt

    def fedkseed(self) -> dict[str, Any]:
        return self.kseed

    def offsite(self) -> dict[str, Any]:
        return self.off

    def metrics_text(self) -> str:
        return f"# TYPE fedswarm_round gauge\nfedswarm_round {self.round}\n"

    def recent_events(self, limit: int = 50) -> list[dict[str, Any]]:
        return self.history[-limit:]

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=16)
        self.queues.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self.queues.remove(queue)

    # -- test controls ------------------------------------------------------------------
    def push(self, event: dict[str, Any]) -> None:
        for queue in self.queues:
            queue.put_nowait(event)


@pytest.fixture
def fake_view() -> FakeView:
    return FakeView()


ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def make_client(fake_view: FakeView) -> AsyncIterator[ClientFactory]:
    """``await make_client(config=...)`` → a started aiohttp TestClient over ``fake_view``."""
    clients: list[TestClient[Any, Any]] = []

    async def factory(config: DashboardConfig | None = None) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = TestClient(
            TestServer(create_app(fake_view, TOKEN, config), host="127.0.0.1")
        )
        await client.start_server()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()


@pytest.fixture
async def client(make_client: ClientFactory) -> TestClient[Any, Any]:
    return await make_client()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def token() -> str:
    return TOKEN


@pytest.fixture
def auth() -> dict[str, str]:
    """Headers that authenticate a request."""
    return dict(AUTH)


@pytest.fixture
def hostile_org() -> str:
    """The org name the fake view's second peer claims: markup that must stay text."""
    return HOSTILE_ORG


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Debian's headless Chromium driven by Playwright (never a downloaded browser)."""
    async_api = pytest.importorskip(
        "playwright.async_api", reason="playwright is not installed (pip install playwright)"
    )
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    async with async_api.async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()
