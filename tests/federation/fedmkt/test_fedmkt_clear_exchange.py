"""One FedMKT exchange between members running different models and tokenizers.

The network is an in-memory fake: ``send_blob`` files the blob straight into the
recipient's real ``Mailbox``, which is exactly what the daemon's blob handler does
after the p2p layer has checked the signature. Models and tokenizers are real (tiny
Llamas, byte-level BPE vs Metaspace Unigram), so knowledge, vocabulary mapping, DTW
alignment and distillation all run for real.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fedswarm.federation.errors import RoundAbortedError
from fedswarm.federation.fedmkt.exchange import (
    KIND,
    FedMKTOutcome,
)
from fedswarm.federation.fedmkt.report import fedmkt_event, fedmkt_record
from fedswarm.federation.fedmkt.settings import FedMKTSection
from fedswarm.federation.mailbox import Letter, Mailbox
from fedswarm.learning.fedmkt import (
    PublicDataset,
    PublicKnowledge,
    VocabMappingCache,
    compute_public_knowledge,
)

from tests.learning.fedmkt.toy_world import (
    build_toy_world,
    tiny_llama,
    train_byte_bpe,
    train_metaspace_unigram,
)

SECTION = FedMKTSection(top_k=8, max_length=48, distill_steps=3, distill_batch_size=4,
                        distill_lr=1e-2)
ROUND = 5


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    torch.set_num_threads(1)
    toy = build_toy_world(private_count=24, public_count=12, eval_count=4, seed=3)
    texts = toy.private["kitchen"] + toy.private["harbour"] + toy.public
    bpe = train_byte_bpe(texts, 300)
    unigram = train_metaspace_unigram(texts, 160)
    return {
        "public": PublicDataset.from_texts(toy.public),
        "tokenizers": {"A": bpe, "B": unigram, "C": bpe},
        "sizes": {"A": (32, 1), "B": (24, 1), "C": (16, 1)},
    }


def make_models(world: dict[str, Any]) -> dict[str, torch.nn.Module]:
    return {
        name: tiny_llama(len(world["tokenizers"][name]), hidden=h, layers=n, seed=i)
        for i, (name, (h, n)) in enumerate(world["sizes"].items())
    }


def params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


def new_mailbox() -> Mailbox:
    mailbox = Mailbox(max_bytes_per_sender_per_round=64 * 2**20)
    mailbox.advance(ROUND)  # the daemon does this when the round starts
    return mailbox


class FakeNetwork:
    """Delivers blobs into the recipients' mailboxes; records what was sent."""

    def __init__(self, names: list[str]) -> None:
        self.mailboxes = {n: new_mailbox() for n in names}
        self.sent: list[tuple[str, str, str, int, int]] = []

    def sender(self, me: str):  # type: ignore[no-untyped-def]
        async def send_blob(recipient: str, kind: str, round: int, payload: bytes) -> None:
            self.sent.append((me, recipient, kind, round, len(payload)))
            if recipient in self.mailboxes:
                self.mailboxes[recipient].put(Letter(me, round, kind, payload))
        return send_blob


async def test_three_heterogeneous_members_teach_each_other(
    run_exchange: Any,
    world: dict[str, Any], tmp_path: Path
) -> None:
    models = make_models(world)
    before = {n: params(m) for n, m in models.items()}
    names = sorted(models)
    network = FakeNetwork(names)
    rejections: list[tuple[str, str]] = []

    async def member(name: str) -> FedMKTOutcome:
        return await run_exchange(
            me=name, group=names, round=ROUND, model=models[name],
            tokenizer=world["tokenizers"][name], public=world["public"], section=SECTION,
            send_blob=network.sender(name), mailbox=network.mailboxes[name],
            deadline=time.monotonic() + 60, on_reject=lambda p, why: rejections.append((p, why)),
            mapping_cache=VocabMappingCache(tmp_path / name), seed=1,
        )

    outcomes = dict(zip(names, await asyncio.gather(*(member(n) for n in names)), strict=True))

    assert rejections == []
    assert {(s, r) for s, r, kind, rnd, _ in network.sent if kind == KIND and rnd == ROUND} == {
        (s, r) for s in names for r in names if s != r
    }
    for name, outcome in outcomes.items():
        others = [n for n in names if n != name]
        assert outcome.teachers == others
        assert outcome.rejected == {} and outcome.missing == []
        sent = [size for s, _, _, _, size in network.sent if s == name]
        assert outcome.bytes_sent == sum(sent) > 0
        received = [size for s, r, _, _, size in network.sent if r == name]
        assert outcome.bytes_received == sum(received)
        assert set(outcome.public_losses) == set(names)
        assert all(np.isfinite(v) and v > 0 for v in outcome.public_losses.values())
        assert outcome.distill.steps == SECTION.distill_steps
        assert 0.0 <= outcome.distill.peer_position_fraction <= 1.0
        assert not torch.equal(before[name], params(models[name])), "distillation trained"
    # min_ce selection: a member learns from a peer's aligned rows where the peer is better.
    assert max(o.distill.peer_position_fraction for o in outcomes.values()) > 0
    # Everyone reports the same public loss for a given model (it travelled in its blob).
    assert outcomes["A"].public_losses["B"] == pytest.approx(outcomes["C"].public_losses["B"])
    assert all("tokenizers or public-set support differ" in (o.clear_why or "")
               for o in outcomes.values())
    # The mapping between the two tokenizer families was computed once and cached on disk.
    assert list((tmp_path / "A").glob("vocabmap-*.npz"))


def tamper(knowledge: PublicKnowledge, **changes: Any) -> bytes:
    """Re-encode ``knowledge`` with its first example changed (a hostile sender)."""
    first = dataclasses.replace(knowledge.examples[0], **changes)
    return dataclasses.replace(knowledge, examples=(first, *knowledge.examples[1:])).encode()


async def test_bad_knowledge_is_refused_and_the_round_goes_on(
    run_exchange: Any,
    world: dict[str, Any], tmp_path: Path
) -> None:
    models = make_models(world)
    public: PublicDataset = world["public"]
    good = compute_public_knowledge(models["B"], world["tokenizers"]["B"], public.texts,
                                    public.sha256, top_k=8, max_length=48)
    nan_logits = good.examples[0].topk_logits.copy()
    nan_logits[0, 0] = np.nan
    bad_ids = good.examples[0].topk_ids.copy()
    bad_ids[0, 0] = len(good.tokenizer) + 7
    long_ids = np.arange(200, dtype=np.int32) % len(good.tokenizer)
    blobs = {
        "good": good.encode(),
        "nan": tamper(good, topk_logits=nan_logits),
        "range": tamper(good, topk_ids=bad_ids),
        "shape": dataclasses.replace(good, examples=good.examples[:-1]).encode(),
        "long": tamper(
            good,
            input_ids=long_ids,
            topk_ids=np.zeros((199, 8), np.int32),
            topk_logits=np.zeros((199, 8), np.float16),
        ),
        "garbage": b"PK\x03\x04 not really a zip",
    }
    mailbox = new_mailbox()
    for sender, blob in blobs.items():
        mailbox.put(Letter(sender, ROUND, KIND, blob))
    mailbox.put(Letter("outsider", ROUND, KIND, blobs["good"]))
    mailbox.put(Letter("good", ROUND, KIND, blobs["good"]))  # a second copy
    rejections: list[tuple[str, str]] = []
    sent: list[str] = []

    async def send_blob(recipient: str, kind: str, round: int, payload: bytes) -> None:
        if kind == KIND:  # cards (kind fedmkt-card) go out too
            sent.append(recipient)

    before = params(models["A"])
    outcome = await run_exchange(
        me="A", group=["A", *blobs, "silent"], round=ROUND, model=models["A"],
        tokenizer=world["tokenizers"]["A"], public=public, section=SECTION,
        send_blob=send_blob, mailbox=mailbox, deadline=time.monotonic() + 1.0,
        on_reject=lambda p, why: rejections.append((p, why)),
        mapping_cache=VocabMappingCache(tmp_path), seed=2,
    )

    assert outcome.teachers == ["good"]
    assert outcome.missing == ["silent"]
    reasons = outcome.rejected
    assert set(reasons) == {"nan", "range", "shape", "long", "garbage"}
    assert "NaN" in reasons["nan"]
    assert "outside the vocabulary" in reasons["range"]
    assert "examples" in reasons["shape"]
    assert "max_length" in reasons["long"]
    assert "decode" in reasons["garbage"]
    rejected_peers = [p for p, _ in rejections]
    assert sorted(rejected_peers) == sorted([*reasons, "outsider", "good"])
    assert all(why for _, why in rejections)
    assert sorted(sent) == sorted([*blobs, "silent"])  # we still taught everyone
    assert not torch.equal(before, params(models["A"]))
    record = fedmkt_record("A", outcome)
    assert record["survivors"] == ["A", "good"]
    assert record["dropped"] == sorted([*reasons, "silent"])
    assert record["protocol"] == "fedmkt"
    assert "learnt from good" in record["note"] and "refused" in record["note"]
    assert "clear exchange" in record["note"]  # no secure aggregation given: clear only
    assert "clear because members asked for clear" in record["note"]
    event = fedmkt_event("A", ROUND, outcome)
    assert event["edges"] == [{"teacher": "good", "student": "A"}]
    assert set(event["public_losses"]) == {"A", "good"}


async def test_no_acceptable_knowledge_aborts_without_touching_the_model(
    run_exchange: Any,
    world: dict[str, Any], tmp_path: Path
) -> None:
    models = make_models(world)
    mailbox = new_mailbox()
    mailbox.put(Letter("B", ROUND, KIND, b"garbage"))

    async def send_blob(recipient: str, kind: str, round: int, payload: bytes) -> None:
        raise ConnectionError("peer unreachable")

    before = params(models["A"])
    with pytest.raises(RoundAbortedError, match="no FedMKT knowledge accepted"):
        await run_exchange(
            me="A", group=["A", "B", "C"], round=ROUND, model=models["A"],
            tokenizer=world["tokenizers"]["A"], public=world["public"], section=SECTION,
            send_blob=send_blob, mailbox=mailbox, deadline=time.monotonic() + 0.5,
            on_reject=lambda p, why: None, mapping_cache=VocabMappingCache(tmp_path),
        )
    assert torch.equal(before, params(models["A"]))
