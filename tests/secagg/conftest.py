"""Shared scaffolding for secagg tests: an in-memory transport, identities, a worker pool.

The in-memory transport is test scaffolding (asyncio queues standing in for the daemon's
p2p blobs); everything it carries is produced and checked by the real product code.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Iterator

import numpy as np
import pytest
from fedswarm.secagg.he import make_executor
from fedswarm.secagg.messages import Step, peek_binding
from fedswarm.secagg.params import PROTOCOL_V3, SecAggParams
from fedswarm.secagg.quantise import QuantisationGrid, weight_class
from fedswarm.secagg.session import GroupSpec
from fedswarm.secagg.signing import Ed25519Signer, Verifier, verifier_from_keys

PROTOCOL_UNDER_TEST = os.environ.get("FEDSWARM_TEST_SECAGG_PROTOCOL", PROTOCOL_V3)
"""The suite's rounds run v3; FEDSWARM_TEST_SECAGG_PROTOCOL=bfv-mask-shamir-v2 reruns them
on v2, which daemons still run by default."""
SMALL_PARAMS = (
    SecAggParams.v3(clip_norm=1.0, quantisation="stochastic")
    if PROTOCOL_UNDER_TEST == PROTOCOL_V3
    else SecAggParams(clip_norm=1.0, quantisation="stochastic")
)


class Network:
    """A group of asyncio queues: member id -> inbox of (sender, bytes)."""

    def __init__(self, members: tuple[str, ...]) -> None:
        self.queues: dict[str, asyncio.Queue[tuple[str, bytes]]] = {
            m: asyncio.Queue() for m in members
        }
        self.dead: set[str] = set()
        self.log: list[tuple[str, str, bytes]] = []

    def transport(self, me: str, drop_at_step: int | None = None) -> MemoryTransport:
        return MemoryTransport(self, me, drop_at_step)


class MemberCrashed(BaseException):
    """Raised inside a member that the test makes drop out (not a product error)."""


class MemoryTransport:
    """Transport over Network; optionally 'crashes' the member when it first sends a step."""

    def __init__(self, network: Network, me: str, drop_at_step: int | None) -> None:
        self.network = network
        self.me = me
        self.drop_at_step = drop_at_step

    async def send(self, recipient: str, data: bytes) -> None:
        _, step, _ = peek_binding(data)
        if self.drop_at_step is not None and int(step) == self.drop_at_step:
            self.network.dead.add(self.me)
            raise MemberCrashed(self.me)
        if recipient in self.network.dead:
            raise ConnectionError(f"{recipient} is gone")
        self.network.log.append((self.me, recipient, data))
        await self.network.queues[recipient].put((self.me, data))

    async def receive(self, timeout: float) -> tuple[str, bytes]:
        return await asyncio.wait_for(self.network.queues[self.me].get(), timeout)


class FailsOneStep:
    """A member's transport that loses (``hang=False``) or never finishes (``hang=True``)
    its message of one step to one recipient: a dropped message or a hung stream."""

    def __init__(self, inner: MemoryTransport, recipient: str, step: Step, *,
                 hang: bool) -> None:
        self.inner = inner
        self.recipient = recipient
        self.step = step
        self.hang = hang

    async def send(self, recipient: str, data: bytes) -> None:
        _, step, _ = peek_binding(data)
        if recipient == self.recipient and step is self.step:
            if not self.hang:
                return
            await asyncio.Event().wait()
        await self.inner.send(recipient, data)

    async def receive(self, timeout: float) -> tuple[str, bytes]:
        return await self.inner.receive(timeout)


class NowhereTransport:
    """For an Inbox tested on its own: nothing arrives, and it never sends."""

    async def send(self, recipient: str, data: bytes) -> None:
        raise AssertionError("the inbox never sends")

    async def receive(self, timeout: float) -> tuple[str, bytes]:
        raise TimeoutError


class Group:
    """k members with identities, a verifier over all of them, and a network."""

    def __init__(self, k: int, round_: int = 7, group_id: str = "g-1") -> None:
        self.members = tuple(sorted(f"peer-{i:02d}" for i in range(k)))
        self.signers = {m: Ed25519Signer.generate(m) for m in self.members}
        self.verify: Verifier = verifier_from_keys(
            {m: s.verify_key for m, s in self.signers.items()}
        )
        self.spec = GroupSpec("fed-test", group_id, round_, self.members)
        self.network = Network(self.members)


@pytest.fixture(scope="session")
def pool() -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    executor = make_executor(2)
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


def group_grid(k: int, weights: list[float]) -> QuantisationGrid:
    """The grid a round of k members with these weights uses (v3: their largest class)."""
    wc = max(weight_class(w, SMALL_PARAMS) for w in weights) if SMALL_PARAMS.packed else None
    return QuantisationGrid.for_group(SMALL_PARAMS, k, wc)


def random_updates(k: int, n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-0.9, 0.9, size=n).astype(np.float32) for _ in range(k)]
