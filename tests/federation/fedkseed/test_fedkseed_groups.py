"""mode = "fedkseed" over an in-memory network: groups end rounds bit-identical.

Trainers, mailboxes, plain averaging and secure aggregation (BFV + masks + Shamir, v3)
are real; only the network is a ``FunctionLink`` that files each blob straight into the
recipient's ``Mailbox``, as the daemon's blob handler does after the p2p layer's checks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fedswarm.federation.averaging.result import GroupAverage
from fedswarm.federation.averaging.secure import SecureAggregation
from fedswarm.federation.errors import RoundAbortedError
from fedswarm.federation.exchange import Combined, MemberParts
from fedswarm.federation.link import FunctionLink
from fedswarm.federation.mailbox import Letter, Mailbox
from fedswarm.federation.modes import make_exchange
from fedswarm.federation.modes.fedkseed import KSeedSettingsConflictError, group_k_vector
from fedswarm.federation.round import RoundContext
from fedswarm.learning.fedkseed import KSeedTrainer
from fedswarm.secagg.he import make_executor
from fedswarm.secagg.params import PROTOCOL_V3
from fedswarm.secagg.signing import Ed25519Signer, verifier_from_keys

NAMES = ["m0", "m1", "m2"]


@pytest.fixture(scope="module")
def pool() -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    executor = make_executor(1)
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


class Network:
    """Mailboxes per member and a send function per member that fills them."""

    def __init__(self) -> None:
        self.mailboxes = {n: Mailbox(max_bytes_per_sender_per_round=2**24) for n in NAMES}
        self.rejected: list[tuple[str, str, str]] = []

    def advance(self, round: int) -> None:
        for mailbox in self.mailboxes.values():
            mailbox.advance(round)

    def context(self, me: str, round: int) -> RoundContext:
        async def send(peer: str, kind: str, rnd: int, payload: bytes) -> None:
            self.mailboxes[peer].put(Letter(me, rnd, kind, payload))

        return RoundContext(
            me=me,
            round=round,
            members=tuple(NAMES),
            link=FunctionLink(send),
            mailbox=self.mailboxes[me],
            deadline=time.monotonic() + 60,
            on_reject=lambda *why: self.rejected.append(why),
        )


async def _round(network: Network, exchanges: dict, round: int) -> dict[str, Combined]:  # type: ignore[type-arg]
    network.advance(round)
    for exchange in exchanges.values():
        await asyncio.to_thread(exchange.train)
    combined = await asyncio.gather(
        *(exchanges[n].combine(network.context(n, round), 100.0 + i) for i, n in enumerate(NAMES))
    )
    for result in combined:
        assert result.apply is not None
        await asyncio.to_thread(result.apply)
    return dict(zip(NAMES, combined, strict=True))


def _exchanges(trainers: dict[str, KSeedTrainer], secure: dict | None = None) -> dict:  # type: ignore[type-arg]
    return {
        n: make_exchange(
            "fedkseed",
            MemberParts(trainer=t, secure=(secure or {}).get(n), work_dir=Path("."), seed=0),
            t.settings,
        )
        for n, t in trainers.items()
    }


async def test_plain_groups_end_every_round_bit_identical_even_after_a_restart(
    make_kseed: Callable[..., KSeedTrainer], tmp_path: Path
) -> None:
    trainers = {n: make_kseed(peer=i) for i, n in enumerate(NAMES)}
    network = Network()
    first = await _round(network, _exchanges(trainers), 1)
    prints = {n: t.parameters_fingerprint() for n, t in trainers.items()}
    assert len(set(prints.values())) == 1
    assert network.rejected == []
    event = first["m0"].event
    assert event is not None and event[0] == "fedkseed"
    assert event[1]["parameters_fingerprint"] == prints["m0"]
    # K = 64 scalars and 64 amplitudes, float32, plus the plain update's 16-byte header
    assert event[1]["bytes_sent"] == 2 * (16 + 4 * 128)

    # m2 restarts from its checkpoint between rounds
    trainers["m2"].save_checkpoint(tmp_path, 1)
    trainers["m2"] = make_kseed(peer=2)
    assert trainers["m2"].load_checkpoint(tmp_path) == 1
    assert trainers["m2"].parameters_fingerprint() == prints["m0"]
    await _round(network, _exchanges(trainers), 2)
    after = {t.parameters_fingerprint() for t in trainers.values()}
    assert len(after) == 1 and after != {prints["m0"]}


async def test_secure_groups_end_bit_identical(
    make_kseed: Callable[..., KSeedTrainer], pool: concurrent.futures.ProcessPoolExecutor
) -> None:
    trainers = {n: make_kseed(peer=i) for i, n in enumerate(NAMES)}
    signers = {n: Ed25519Signer.generate(n) for n in NAMES}
    verify = verifier_from_keys({n: s.verify_key for n, s in signers.items()})
    secure = {
        n: SecureAggregation(
            "fed-test", signers[n], verify, lambda: pool, 30.0, protocol=PROTOCOL_V3
        )
        for n in NAMES
    }
    exchanges = _exchanges(trainers, secure)
    network = Network()
    network.advance(1)
    for exchange in exchanges.values():
        exchange.train()
    sent = [t.exchange_vector()[0] for t in trainers.values()]
    exact = np.average(sent, axis=0, weights=[100.0, 101.0, 102.0])
    results = await asyncio.gather(
        *(exchanges[n].combine(network.context(n, 1), 100.0 + i) for i, n in enumerate(NAMES))
    )
    for result in results:
        assert result.apply is not None
        result.apply()
    assert len({t.parameters_fingerprint() for t in trainers.values()}) == 1
    assert {r.record["protocol"] for r in results} == {PROTOCOL_V3}
    k, bound = trainers["m0"].settings.k, trainers["m0"].settings.scalar_bound
    # secure aggregation's quantisation: close to the exact weighted average, not equal
    assert np.allclose(trainers["m0"].state.scalars, exact[:k] * bound, atol=bound * 2e-3)
    assert np.count_nonzero(trainers["m0"].state.scalars) > 0


def test_group_results_that_are_no_k_vector_abort_the_round() -> None:
    def outcome(values: list[float]) -> GroupAverage:
        return GroupAverage(np.array(values, np.float32), 3.0, NAMES, [], "none")

    assert group_k_vector(outcome([0.5, -1.0]), 2).tolist() == [0.5, -1.0]
    for values, why in (([0.5], "expected 2"), ([np.nan, 0.0], "NaN"), ([3.0, 0.0], "above")):
        with pytest.raises(RoundAbortedError, match=why):
            group_k_vector(outcome(values), 2)


def test_the_mode_refuses_a_lora_trainer_or_other_settings(
    make_kseed: Callable[..., KSeedTrainer],
) -> None:
    trainer = make_kseed()
    parts = MemberParts(trainer=trainer, secure=None, work_dir=Path("."), seed=0)
    with pytest.raises(KSeedSettingsConflictError, match="differ"):
        make_exchange("fedkseed", parts, type(trainer.settings)(k=32))
    lora: object = object()
    with pytest.raises(KSeedSettingsConflictError, match="KSeedTrainer"):
        make_exchange(
            "fedkseed",
            MemberParts(
                trainer=lora,
                secure=None,  # type: ignore[arg-type]
                work_dir=Path("."),
                seed=0,
            ),
            trainer.settings,
        )
