"""The round runner against hostile peers, with light fakes (issue #19).

* an exception while combining peers' messages aborts that round for this member
  (logged with its traceback, counted as a rejection) and never ends the daemon; only
  shutdown and this member's own disk or checkpoint failures propagate;
* catch-up adopts only the adapter a quorum of up members advertise, no later than
  the federation's target, and only once it hashes to the advertised fingerprint.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fedswarm.daemon.errors import DiskFullError
from fedswarm.daemon.round_runner import MemberServices, RoundRunner, TrainingInterrupted
from fedswarm.federation.catch_up import PulledAdapter
from fedswarm.federation.errors import RoundAbortedError
from fedswarm.learning.adapter_vector import vector_fingerprint
from fedswarm.learning.errors import CheckpointError

MANIFEST = [("w", (8,))]


@dataclass
class Advert:
    adapter_round: int
    fingerprint: str
    up: bool = True
    round: int = 0


class FakeTrainer:
    num_train_samples = 10

    def __init__(self) -> None:
        self.vector = np.zeros(8, dtype=np.float32)
        self.loaded: list[np.ndarray] = []

    def adapter_vector(self) -> np.ndarray:
        return self.vector.copy()

    def fingerprint_of(self, vector: np.ndarray) -> str:
        return vector_fingerprint(vector, MANIFEST)

    def adapter_fingerprint(self) -> str:
        return self.fingerprint_of(self.vector)

    def load_adapter_vector(self, vector: np.ndarray) -> None:
        self.loaded.append(vector)
        self.vector = vector.copy()

    def evaluate(self) -> Any:
        return SimpleNamespace(loss=1.0)

    def save_checkpoint(self, path: Path, round: int) -> None:
        pass


class FakeAdapters:
    """Answers every pull with ``answer`` (the responder chooses what to send)."""

    def __init__(self, answer: tuple[int, np.ndarray]) -> None:
        self.answer = answer
        self.pulls: list[str] = []

    async def pull(self, peer: str, own_round: int, size: int, timeout: float) -> PulledAdapter:
        self.pulls.append(peer)
        round, vector = self.answer
        return PulledAdapter(peer, round, vector, 1.0)


class RaisingExchange:
    adopts_neighbour_adapters = True

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def combine(self, ctx: Any, weight: float) -> Any:
        raise self.error


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self.calls.append((name, args))


def _runner(tmp_path: Path, *, exchange: Any = None, view: dict[str, Advert] | None = None,
            adapters: FakeAdapters | None = None, rounds: int = 0) -> tuple[RoundRunner, list]:
    rejections: list[tuple[str | None, str, str]] = []
    members = {"me", *(view or {})} - {"stranger"}
    services = MemberServices(
        me="me",
        config=SimpleNamespace(  # type: ignore[arg-type]
            federation=SimpleNamespace(round_deadline_s=5.0, rounds=rounds),
            state_dir=tmp_path,
        ),
        trainer=FakeTrainer(),  # type: ignore[arg-type]
        store=Recorder(),  # type: ignore[arg-type]
        events=Recorder(),  # type: ignore[arg-type]
        mailbox=Recorder(),  # type: ignore[arg-type]
        link=Recorder(),  # type: ignore[arg-type]
        exchange=exchange or RaisingExchange(RuntimeError("unused")),
        adapters=adapters or FakeAdapters((0, np.zeros(8, np.float32))),  # type: ignore[arg-type]
        view=lambda: dict(view or {}),  # type: ignore[arg-type]
        is_member=lambda peer: peer in members,
        up_members=lambda: sorted(members),
        set_phase=lambda phase: None,
        reject=lambda peer, kind, why: rejections.append((peer, kind, why)),
        stopping=asyncio.Event(),
    )
    return RoundRunner(services), rejections


# -- no crash from peer input -----------------------------------------------------------


async def test_a_parser_error_while_combining_aborts_the_round_not_the_daemon(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    error = ValueError("malformed ciphertext chunk")
    runner, rejections = _runner(tmp_path, exchange=RaisingExchange(error))
    with caplog.at_level(logging.WARNING, logger="fedswarm.daemon.rounds"):
        combined, status, note = await runner._combine(4, ("a", "b", "me"))
    assert (combined, status) == (None, "aborted")
    assert note is not None and "malformed ciphertext chunk" in note
    why = "round 4 aborted: ValueError: malformed ciphertext chunk"
    assert rejections == [(None, "round", why)]
    assert any(record.exc_info and record.exc_info[1] is error for record in caplog.records)
    assert runner.progress.last_aggregated_round is None


async def test_a_round_abort_is_still_an_ordinary_abort(tmp_path: Path) -> None:
    runner, rejections = _runner(tmp_path, exchange=RaisingExchange(RoundAbortedError("2 of 3")))
    assert await runner._combine(4, ("a", "b", "me")) == (None, "aborted", "2 of 3")
    assert rejections == []


@pytest.mark.parametrize(
    "error",
    [TrainingInterrupted(), DiskFullError("disk full"), CheckpointError("cannot write"),
     asyncio.CancelledError()],
    ids=["shutdown", "disk-full", "checkpoint", "cancelled"],
)
async def test_shutdown_and_own_disk_failures_still_propagate(
    tmp_path: Path, error: BaseException
) -> None:
    runner, _ = _runner(tmp_path, exchange=RaisingExchange(error))
    with pytest.raises(type(error)):
        await runner._combine(4, ("a", "b", "me"))


# -- catch-up takeover ------------------------------------------------------------------


def _honest(round: int = 6) -> tuple[dict[str, Advert], np.ndarray]:
    vector = np.full(8, 0.25, dtype=np.float32)
    fingerprint = vector_fingerprint(vector, MANIFEST)
    view = {p: Advert(round, fingerprint) for p in ("a", "b", "c")}
    return view, vector


async def test_one_member_advertising_round_999999_is_not_followed(tmp_path: Path) -> None:
    view, _ = _honest(round=0)  # the honest members are where we are
    view["evil"] = Advert(999_999, "evil")
    adapters = FakeAdapters((999_999, np.full(8, 9.0, np.float32)))
    runner, _ = _runner(tmp_path, view=view, adapters=adapters)
    assert await runner._catch_up() is False
    assert adapters.pulls == []
    assert runner.progress.round == 0


async def test_a_quorums_adapter_is_adopted_at_the_quorums_round(tmp_path: Path) -> None:
    view, vector = _honest(round=6)
    view["evil"] = Advert(999_999, "evil")
    runner, rejections = _runner(tmp_path, view=view, adapters=FakeAdapters((6, vector)))
    assert await runner._catch_up() is True
    assert runner.progress.round == 6
    trainer = runner.s.trainer
    assert isinstance(trainer, FakeTrainer)
    np.testing.assert_array_equal(trainer.vector, vector)
    assert rejections == []


async def test_a_poisoned_answer_from_a_quorum_member_is_refused_before_loading(
    tmp_path: Path,
) -> None:
    view, vector = _honest(round=6)
    poisoned = vector.copy()
    poisoned[0] = 9.0
    runner, rejections = _runner(tmp_path, view=view, adapters=FakeAdapters((6, poisoned)))
    assert await runner._catch_up() is False
    trainer = runner.s.trainer
    assert isinstance(trainer, FakeTrainer)
    assert trainer.loaded == []
    assert runner.progress.round == 0
    assert len(rejections) == 1 and rejections[0][1] == "catch-up"


async def test_an_answer_for_another_round_is_refused(tmp_path: Path) -> None:
    view, vector = _honest(round=6)
    runner, _ = _runner(tmp_path, view=view, adapters=FakeAdapters((2**40, vector)))
    assert await runner._catch_up() is False
    assert runner.progress.round == 0


async def test_never_beyond_the_federations_target(tmp_path: Path) -> None:
    view, vector = _honest(round=12)
    adapters = FakeAdapters((12, vector))
    runner, _ = _runner(tmp_path, view=view, adapters=adapters, rounds=10)
    assert await runner._catch_up() is False
    assert adapters.pulls == []
