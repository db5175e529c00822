"""mode = "offsite" over FunctionLink and real mailboxes: members average, the owner plugs in.

The owner takes part with weight 0: it adds nothing to the sum, does not count towards
the minimum group size, believes only an average a quorum confirms, and loses nothing
when it restarts or misses rounds.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedswarm.federation.errors import RoundAbortedError
from fedswarm.federation.link import OFFSITE_AVERAGE_KIND, PLAIN_UPDATE_KIND, FunctionLink
from fedswarm.federation.modes.offsite import OffsiteMember, OffsiteOwner
from fedswarm.federation.offsite.codec import encode_average
from fedswarm.federation.offsite.owner_quorum import NoQuorumError, agreed_average
from fedswarm.federation.round import RoundContext

from bench.quality_transport import MailboxNetwork

from .fakes import FakeOwnerModel, FakeTrainer

OWNER = "peer-0-owner"
DATA = ["peer-a", "peer-b", "peer-c"]
STEPS = {"peer-a": 0.01, "peer-b": 0.02, "peer-c": 0.06}
WEIGHTS = {"peer-a": 1.0, "peer-b": 1.0, "peer-c": 2.0}


def _ctx(
    network: MailboxNetwork,
    me: str,
    round: int,
    members: list[str],
    sent: list[tuple[str, str, str]],
) -> RoundContext:
    send = network.sender(me)

    async def recording(peer: str, kind: str, r: int, payload: bytes) -> None:
        sent.append((me, peer, kind))
        await send(peer, kind, r, payload)

    return RoundContext(
        me=me,
        round=round,
        members=tuple(sorted(members)),
        link=FunctionLink(recording),
        mailbox=network.mailboxes[me],
        deadline=time.monotonic() + 5.0,
        on_reject=lambda *_: None,
    )


async def _round(
    network: MailboxNetwork, round: int, members: dict[str, Any], sent: list[tuple[str, str, str]]
) -> dict[str, Any]:
    network.advance(round)

    async def one(me: str) -> Any:
        exchange = members[me]
        exchange.train()
        combined = await exchange.combine(
            _ctx(network, me, round, list(members), sent), WEIGHTS.get(me, 0.0)
        )
        assert combined.apply is not None
        combined.apply()
        return combined

    results = await asyncio.gather(*(one(m) for m in members), return_exceptions=True)
    return dict(zip(members, results, strict=True))


def _federation(tmp_path: Path) -> tuple[dict[str, FakeTrainer], FakeOwnerModel, dict[str, Any]]:
    trainers = {m: FakeTrainer(STEPS[m]) for m in DATA}
    owner_model = FakeOwnerModel()
    members: dict[str, Any] = {m: OffsiteMember(trainers[m], OWNER, None) for m in DATA}  # type: ignore[arg-type]
    members[OWNER] = OffsiteOwner(owner_model, tmp_path, tmp_path / "export")  # type: ignore[arg-type]
    return trainers, owner_model, members


async def test_members_average_without_the_owner_and_the_owner_plugs_the_average_in(
    tmp_path: Path,
) -> None:
    trainers, owner_model, members = _federation(tmp_path)
    network = MailboxNetwork([*DATA, OWNER])
    sent: list[tuple[str, str, str]] = []
    results = await _round(network, 1, members, sent)

    assert not any(isinstance(r, BaseException) for r in results.values()), results
    expected_step = sum(STEPS[m] * WEIGHTS[m] for m in DATA) / sum(WEIGHTS.values())
    want = trainers["peer-a"].initial_vector + np.float32(expected_step)
    for m in DATA:
        np.testing.assert_allclose(trainers[m].vector, want, atol=1e-6)
        assert sorted(results[m].record["survivors"]) == DATA  # the owner is not a survivor
    np.testing.assert_allclose(owner_model.plugged, want, atol=1e-6)
    assert owner_model.exports == [tmp_path / "export"]
    assert results[OWNER].record["survivors"] == DATA  # every member confirmed it
    # The owner never sent an update, and nobody sent one to it.
    assert not [s for s in sent if s[2] == PLAIN_UPDATE_KIND and OWNER in (s[0], s[1])]
    assert sorted(s[0] for s in sent if s[2] == OFFSITE_AVERAGE_KIND) == DATA


async def test_the_owner_does_not_count_towards_the_minimum_group_size(tmp_path: Path) -> None:
    _, owner_model, members = _federation(tmp_path)
    del members["peer-c"]
    network = MailboxNetwork(["peer-a", "peer-b", OWNER])
    results = await _round(network, 1, members, [])
    for outcome in results.values():
        assert isinstance(outcome, RoundAbortedError)
        assert "does not count" in str(outcome)
    np.testing.assert_array_equal(owner_model.plugged, owner_model.initial_vector)


async def test_a_restarted_owner_keeps_what_it_plugged_in_and_catches_up_on_missed_rounds(
    tmp_path: Path,
) -> None:
    trainers, owner_model, members = _federation(tmp_path)
    network = MailboxNetwork([*DATA, OWNER])
    await _round(network, 1, members, [])
    after_round_1 = owner_model.plugged.copy()

    # The owner process dies; members go on without it for rounds 2 and 3.
    data_only = {m: members[m] for m in DATA}
    for round in (2, 3):
        results = await _round(network, round, data_only, [])
        assert not any(isinstance(r, BaseException) for r in results.values())

    restarted_model = FakeOwnerModel()
    restarted = OffsiteOwner(restarted_model, tmp_path)  # type: ignore[arg-type]
    assert restarted.round == 1
    np.testing.assert_array_equal(restarted_model.plugged, after_round_1)

    members[OWNER] = restarted
    await _round(network, 4, members, [])
    # Averages are cumulative changes: round 4's holds rounds 2 and 3 as well.
    np.testing.assert_allclose(restarted_model.plugged, trainers["peer-a"].vector, atol=1e-6)
    assert restarted.round == 4


def test_the_owner_believes_only_an_average_a_quorum_sent() -> None:
    good, forged = encode_average(np.ones(4)), encode_average(np.full(4, 9.0))
    result = agreed_average({"a": good, "b": good, "c": good, "d": forged})
    assert result.payload == good and result.confirmed_by == ("a", "b", "c")
    with pytest.raises(NoQuorumError):
        agreed_average({"a": good, "b": good, "c": forged})  # two agreeing are not enough
    with pytest.raises(NoQuorumError):
        agreed_average({"a": good, "b": good, "c": good, "d": forged, "e": forged, "f": forged})
    with pytest.raises(NoQuorumError):
        agreed_average({})


def test_an_unreadable_owner_state_is_a_one_line_error(tmp_path: Path) -> None:
    from fedswarm.federation.modes.offsite import OWNER_STATE_FILE, OwnerStateError

    (tmp_path / OWNER_STATE_FILE).write_bytes(b"not an npz")
    with pytest.raises(OwnerStateError, match="cannot restore"):
        OffsiteOwner(FakeOwnerModel(), tmp_path)  # type: ignore[arg-type]
