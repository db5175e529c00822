"""Homogeneous FedMKT groups average their public-set distributions under secure aggregation.

Models, tokenizer, support vectors and the secure-aggregation protocol are real; only the
network is in memory: ``send_blob`` files blobs into the recipients' real ``Mailbox`` and
the secagg transport is a set of asyncio queues, standing in for the p2p layer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fedswarm.federation.averaging.plain import GroupAverage
from fedswarm.federation.errors import RoundAbortedError
from fedswarm.federation.fedmkt.cards import KIND as CARD_KIND
from fedswarm.federation.fedmkt.cards import Card, decide_exchange
from fedswarm.federation.fedmkt.exchange import (
    KIND,
    SUPPORT_SECAGG_PARAMS,
    FedMKTOutcome,
)
from fedswarm.federation.fedmkt.report import fedmkt_event, fedmkt_record
from fedswarm.federation.fedmkt.settings import FedMKTSection
from fedswarm.federation.mailbox import Letter, Mailbox
from fedswarm.learning.fedmkt import (
    PublicDataset,
    SupportAverageError,
    VocabMappingCache,
    build_public_support,
    check_average,
    compute_public_knowledge,
    support_vector,
    teacher_knowledge,
)
from fedswarm.learning.fedmkt.support import CE_SCALE
from fedswarm.secagg.he import make_executor
from fedswarm.secagg.params import SecAggParams
from fedswarm.secagg.session import GroupSpec, run_secure_aggregation
from fedswarm.secagg.signing import Ed25519Signer, verifier_from_keys

from tests.learning.fedmkt.toy_world import build_toy_world, tiny_llama, train_byte_bpe

ROUND = 4
SECTION = FedMKTSection(top_k=8, max_length=40, distill_steps=3, distill_batch_size=4,
                        distill_lr=1e-2, support_size=12)


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    torch.set_num_threads(1)
    toy = build_toy_world(private_count=16, public_count=8, eval_count=2, seed=5)
    tokenizer = train_byte_bpe(toy.private["kitchen"] + toy.private["harbour"] + toy.public, 300)
    return {"public": PublicDataset.from_texts(toy.public), "tokenizer": tokenizer}


@pytest.fixture(scope="module")
def pool() -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    executor = make_executor(2)
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


def models(world: dict[str, Any], n: int) -> list[torch.nn.Module]:
    return [tiny_llama(len(world["tokenizer"]), hidden=32, layers=1, seed=i) for i in range(n)]


def params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


class SecAggNetwork:
    """asyncio queues standing in for the p2p layer under ``secure_group_average``."""

    def __init__(self, members: list[str], pool: concurrent.futures.ProcessPoolExecutor):
        self.members = tuple(sorted(members))
        self.queues: dict[str, asyncio.Queue[tuple[str, bytes]]] = {
            m: asyncio.Queue() for m in self.members
        }
        self.signers = {m: Ed25519Signer.generate(m) for m in self.members}
        self.verify = verifier_from_keys({m: s.verify_key for m, s in self.signers.items()})
        self.pool = pool

    def secure_average(self, me: str):  # type: ignore[no-untyped-def]
        network = self

        class Transport:
            async def send(self, recipient: str, data: bytes) -> None:
                await network.queues[recipient].put((me, data))

            async def receive(self, timeout: float) -> tuple[str, bytes]:
                return await asyncio.wait_for(network.queues[me].get(), timeout)

        async def average(
            *, vector: np.ndarray, weight: float, params: SecAggParams
        ) -> GroupAverage:
            result = await run_secure_aggregation(
                GroupSpec("fed-test", "g-fedmkt", ROUND, self.members), self.signers[me],
                self.verify, vector, weight, Transport(), params, step_timeout_s=4.0,
                executor=self.pool,
            )
            return GroupAverage(
                average=result.average, total_weight=result.total_weight,
                survivors=list(result.survivors), dropped=list(result.dropped),
                protocol="bfv-mask-shamir-v2", aggregator=result.aggregator,
                decryptor=result.decryptor, bytes_sent=result.bytes_sent,
                bytes_received=result.bytes_received, timings=result.timings,
                error_bound=result.error_bound,
            )

        return average


async def test_secure_average_equals_plain_average_and_makes_a_valid_teacher(
    world: dict[str, Any], pool: concurrent.futures.ProcessPoolExecutor
) -> None:
    tokenizer, public = world["tokenizer"], world["public"]
    support = build_public_support(tokenizer, public, SECTION.max_length, SECTION.support_size)
    group = models(world, 3)
    vectors = [support_vector(m, support) for m in group]
    assert vectors[0].shape == (support.vector_size,)
    # each member's vector is a distribution per row plus its CE, scaled into [0, 1]
    split = support.rows * support.slots
    for model, vector in zip(group, vectors, strict=True):
        rows = vector[:split].reshape(support.rows, support.slots)
        assert rows.min() >= 0 and np.allclose(rows.sum(axis=1), 1.0, atol=1e-5)
        own = compute_public_knowledge(model, tokenizer, public.texts, public.sha256,
                                       top_k=4, max_length=SECTION.max_length)
        assert np.allclose(vector[split:] * CE_SCALE, [e.mean_ce for e in own.examples],
                           atol=1e-4)

    names = ["m0", "m1", "m2"]
    network = SecAggNetwork(names, pool)
    results = await asyncio.gather(*(
        network.secure_average(n)(vector=v, weight=1.0, params=SUPPORT_SECAGG_PARAMS)
        for n, v in zip(names, vectors, strict=True)
    ))
    plain = np.mean(np.stack(vectors), axis=0)
    from fedswarm.secagg.quantise import QuantisationGrid

    bound = QuantisationGrid.for_group(SUPPORT_SECAGG_PARAMS, 3).error_bound(3.0)
    assert bound < 1e-6  # max_weight = 1 makes the grid fine enough for probabilities
    float32 = float(np.finfo(np.float32).eps)  # secagg hands the average back as float32
    for result in results:
        assert np.abs(result.average - plain).max() <= bound + float32

    average = check_average(results[0].average, support, bound + float32)
    teacher = teacher_knowledge(average, support)
    teacher.validate(vocab_size=len(tokenizer), expected_public_sha256=public.sha256,
                     expected_examples=len(public))
    for example in teacher.examples:
        logits = example.topk_logits.astype(np.float64)
        assert np.isfinite(logits).all()
        assert (np.diff(logits, axis=1) <= 0).all()  # sorted like a real top-k
        assert (np.exp(logits).sum(axis=1) <= 1 + 1e-2).all()
    assert np.allclose(average.mean_ce, plain[split:] * CE_SCALE, atol=CE_SCALE * 2 * float32)


def test_an_average_that_is_not_a_distribution_is_refused(world: dict[str, Any]) -> None:
    tokenizer, public = world["tokenizer"], world["public"]
    support = build_public_support(tokenizer, public, SECTION.max_length, SECTION.support_size)
    honest = [support_vector(m, support) for m in models(world, 2)]
    split = support.rows * support.slots
    hostile = honest[0].copy()
    hostile[:split] = -1.0  # secagg's clip lets -1 through; the average cannot hide it
    with pytest.raises(SupportAverageError, match=r"not \[0, 1\]|sums"):
        check_average(np.mean(np.stack([*honest, hostile]), axis=0), support, 1e-9)
    shifted = honest[0].copy()
    shifted[:split:support.slots] += 0.9  # extra mass: rows no longer sum to one
    with pytest.raises(SupportAverageError, match="sums to 1"):
        check_average(np.mean(np.stack([*honest, np.clip(shifted, 0, 1)]), axis=0),
                      support, 1e-9)
    with pytest.raises(SupportAverageError, match="shape"):
        check_average(honest[0][:-1], support, 1e-9)


def test_support_fingerprint_tells_tokenizers_and_settings_apart(world: dict[str, Any]) -> None:
    tokenizer, public = world["tokenizer"], world["public"]
    base = build_public_support(tokenizer, public, 40, 12).fingerprint
    assert build_public_support(tokenizer, public, 40, 12).fingerprint == base
    assert build_public_support(tokenizer, public, 30, 12).fingerprint != base
    assert build_public_support(tokenizer, public, 40, 11).fingerprint != base
    other = train_byte_bpe(list(public.texts), 280)
    assert build_public_support(other, public, 40, 12).fingerprint != base


def test_exchange_rule_secure_only_when_everyone_shares_the_support_and_asks() -> None:
    same, other = "a" * 64, "b" * 64
    secure, clear = Card(same, "secure"), Card(same, "clear")
    assert decide_exchange("A", secure, {"B": secure, "C": secure}) == "secure"
    assert decide_exchange("A", clear, {"B": clear}) == "clear"
    # issue #19: one card with another fingerprint used to switch a secure group to clear
    with pytest.raises(RoundAbortedError, match="never falls back to clear"):
        decide_exchange("A", secure, {"B": Card(other, "secure"), "C": secure})
    with pytest.raises(RoundAbortedError, match="never falls back to clear"):
        decide_exchange("A", secure, {"B": Card(other, "clear")})
    with pytest.raises(RoundAbortedError, match="never falls back to clear"):
        decide_exchange("A", secure, {"B": clear, "C": secure})
    with pytest.raises(RoundAbortedError, match="disagree"):
        decide_exchange("A", clear, {"B": clear, "C": secure})
    # a heterogeneous group that asked for clear keeps working in the clear
    assert decide_exchange("A", clear, {"B": Card(other, "clear")}) == "clear"
    assert decide_exchange("A", clear, {"B": Card(other, "secure")}) == "clear"
    assert Card.decode(secure.encode()) == secure
    for bad in (b"{}", b"\xff", b'{"v": 1, "fingerprint": "x", "exchange": "secure"}',
                b"x" * 2000):
        with pytest.raises(ValueError):
            Card.decode(bad)


async def test_homogeneous_group_exchanges_securely_and_survives_a_dropped_member(
    run_exchange: Any,
    world: dict[str, Any], pool: concurrent.futures.ProcessPoolExecutor, tmp_path: Path
) -> None:
    names = ["A", "B", "C", "D"]  # D never shows up: three survivors still finish
    live = names[:3]
    group = dict(zip(live, models(world, 3), strict=True))
    before = {n: params(m) for n, m in group.items()}
    mailboxes = {n: Mailbox(max_bytes_per_sender_per_round=64 * 2**20) for n in names}
    for mailbox in mailboxes.values():
        mailbox.advance(ROUND)
    sent: list[tuple[str, str, str]] = []
    network = SecAggNetwork(names, pool)
    rejections: list[tuple[str, str]] = []

    def sender(me: str):  # type: ignore[no-untyped-def]
        async def send_blob(recipient: str, kind: str, round: int, payload: bytes) -> None:
            sent.append((me, recipient, kind))
            mailboxes[recipient].put(Letter(me, round, kind, payload))
        return send_blob

    async def member(name: str) -> FedMKTOutcome:
        return await run_exchange(
            me=name, group=names, round=ROUND, model=group[name], tokenizer=world["tokenizer"],
            public=world["public"], section=SECTION, send_blob=sender(name),
            mailbox=mailboxes[name], deadline=time.monotonic() + 12,
            on_reject=lambda p, why: rejections.append((p, why)),
            mapping_cache=VocabMappingCache(tmp_path / name), seed=3,
            secure_average=network.secure_average(name),
        )

    outcomes = dict(zip(live, await asyncio.gather(*(member(n) for n in live)), strict=True))

    assert rejections == []
    assert {kind for _, _, kind in sent} == {CARD_KIND}  # no top-k left anyone in the clear
    assert not any(kind == KIND for _, _, kind in sent)
    for name, outcome in outcomes.items():
        assert outcome.exchange == "secure"
        assert outcome.clear_knowledge_bytes == 0
        assert outcome.teachers == [n for n in live if n != name]
        assert outcome.missing == ["D"]
        assert outcome.group_public_loss is not None and outcome.group_public_loss > 0
        assert outcome.distill.steps == SECTION.distill_steps
        assert not torch.equal(before[name], params(group[name])), "distillation trained"
        record = fedmkt_record(name, outcome)
        assert record["protocol"] == "fedmkt" and "secure exchange" in record["note"]
        assert record["dropped"] == ["D"] and record["aggregator"] in live
        event = fedmkt_event(name, ROUND, outcome)
        assert event["exchange"] == "secure" and event["clear_knowledge_bytes"] == 0
    # everyone distilled from the same average
    losses = {round(o.group_public_loss or 0, 6) for o in outcomes.values()}
    assert len(losses) == 1


@pytest.mark.parametrize("attack", ["tiny total weight", "total over k", "total not k",
                                    "out of range"])
async def test_secure_exchange_refuses_an_average_honest_members_cannot_produce(
    attack: str, run_exchange: Any, world: dict[str, Any], tmp_path: Path
) -> None:
    """A forged secure result (D or a member lying) is refused before any distillation."""
    (model,) = models(world, 1)
    before = params(model)
    names = ["A", "B", "C"]

    async def forged(*, vector: np.ndarray, weight: float, params: SecAggParams) -> GroupAverage:
        average, total = vector.copy(), 3.0
        if attack == "tiny total weight":
            total = 1 / 64
        elif attack == "total over k":
            total = 4.0
        elif attack == "total not k":
            total = 2.0
        else:
            average[0] = 8.4e6
        return GroupAverage(average=average, total_weight=total, survivors=names, dropped=[],
                            protocol="forged", error_bound=1e-6)

    mailbox = Mailbox(max_bytes_per_sender_per_round=2**20)
    mailbox.advance(ROUND)

    async def send_blob(recipient: str, kind: str, round: int, payload: bytes) -> None:
        return None

    with pytest.raises(RoundAbortedError, match="refused"):
        await run_exchange(
            me="A", group=names, round=ROUND, model=model, tokenizer=world["tokenizer"],
            public=world["public"], section=SECTION, send_blob=send_blob, mailbox=mailbox,
            deadline=time.monotonic() + 1.5, on_reject=lambda p, why: None,
            mapping_cache=VocabMappingCache(tmp_path / "A"), seed=3, secure_average=forged,
        )
    assert torch.equal(before, params(model)), "nothing was distilled from the forged average"
