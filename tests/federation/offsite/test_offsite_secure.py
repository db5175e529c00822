"""mode = "offsite" under real secure aggregation: the owner is no party to the session."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedswarm.federation.averaging.secure import SecureAggregation
from fedswarm.federation.link import OFFSITE_AVERAGE_KIND, SECAGG_KIND, FunctionLink
from fedswarm.federation.modes.offsite import OffsiteMember, OffsiteOwner
from fedswarm.federation.round import RoundContext
from fedswarm.secagg.he import make_executor
from fedswarm.secagg.signing import Ed25519Signer, verifier_from_keys

from bench.quality_transport import MailboxNetwork

from .fakes import FakeOwnerModel, FakeTrainer

OWNER = "peer-0-owner"
DATA = ("peer-a", "peer-b", "peer-c")
STEPS = {"peer-a": 0.01, "peer-b": 0.03, "peer-c": 0.05}


@pytest.fixture(scope="module")
def pool() -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    executor = make_executor(1)
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


async def test_members_average_securely_and_the_owner_gets_only_the_result(
    pool: concurrent.futures.ProcessPoolExecutor, tmp_path: Path
) -> None:
    import asyncio

    signers = {m: Ed25519Signer.generate(m) for m in DATA}
    verify = verifier_from_keys({m: s.verify_key for m, s in signers.items()})
    trainers = {m: FakeTrainer(STEPS[m]) for m in DATA}
    owner_model = FakeOwnerModel()
    exchanges: dict[str, Any] = {
        m: OffsiteMember(
            trainers[m],
            OWNER,  # type: ignore[arg-type]
            SecureAggregation("fed", signers[m], verify, lambda: pool, 60.0),
        )
        for m in DATA
    }
    exchanges[OWNER] = OffsiteOwner(owner_model, tmp_path)  # type: ignore[arg-type]
    network = MailboxNetwork([*DATA, OWNER])
    network.advance(1)
    received_by_owner: list[str] = []
    deadline = time.monotonic() + 60.0

    async def one(me: str) -> Any:
        send = network.sender(me)

        async def recording(peer: str, kind: str, r: int, payload: bytes) -> None:
            if peer == OWNER:
                received_by_owner.append(kind)
            await send(peer, kind, r, payload)

        exchanges[me].train()
        ctx = RoundContext(
            me=me,
            round=1,
            members=tuple(sorted([*DATA, OWNER])),
            link=FunctionLink(recording),
            mailbox=network.mailboxes[me],
            deadline=deadline,
            on_reject=lambda *_: None,
        )
        combined = await exchanges[me].combine(ctx, 0.0 if me == OWNER else 1.0)
        combined.apply()
        return combined

    results = dict(
        zip([*DATA, OWNER], await asyncio.gather(*(one(m) for m in [*DATA, OWNER])), strict=True)
    )
    want = trainers["peer-a"].initial_vector + np.float32(np.mean(list(STEPS.values())))
    for m in DATA:
        assert results[m].record["protocol"] != "plain"
        np.testing.assert_allclose(trainers[m].vector, want, atol=1e-3)
    np.testing.assert_allclose(owner_model.plugged, want, atol=1e-3)
    # Members agree bit for bit, so all three confirmed; the owner saw no session message.
    assert results[OWNER].record["survivors"] == list(DATA)
    assert SECAGG_KIND not in received_by_owner
    assert received_by_owner.count(OFFSITE_AVERAGE_KIND) == 3
