"""The round runner against hostile peers, with light fakes (issue #19).

* an exception while combining peers' messages aborts that round for this member
  (logged with its traceback, counted as a rejection) and never ends the daemon; only
  shutdown and this member's own disk or checkpoint failures propagate;
* catch-up never adopts a round beyond the federation's target, nor one the responder
  did not advertise.
"""

from __future__ import annotations

import asyncio
import hashlib
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
from fedswarm.learning.errors import CheckpointError


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

    def adapter_fingerprint(self) -> str:
        return hashlib.sha256(self.vector.tobytes()).hexdigest()[:16]

    def adapter_snapshot(self) -> tuple[np.ndarray, str]:
        return self.adapter_vector(), self.adapter_fingerprint()

    @property
    def adapter_size(self) -> int:
        return self.vector.size

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


# -- catch-up bounds -------------------------------------------------------------------


async def test_catch_up_never_adopts_a_round_beyond_the_federations_target(
    tmp_path: Path,
) -> None:
    view = {"evil": Advert(999_999, "evil", round=999_999)}
    adapters = FakeAdapters((999_999, np.full(8, 9.0, np.float32)))
    runner, _ = _runner(tmp_path, view=view, adapters=adapters, rounds=10)

    assert await runner._catch_up() is False  # it answered beyond what we asked for
    assert runner.progress.round == 0
    assert runner.s.trainer.loaded == []  # type: ignore[attr-defined]


async def test_catch_up_at_the_target_adopts_no_more_than_the_target(tmp_path: Path) -> None:
    view = {"a": Advert(999_999, "x", round=999_999)}
    adapters = FakeAdapters((10, np.full(8, 0.5, np.float32)))
    runner, _ = _runner(tmp_path, view=view, adapters=adapters, rounds=10)

    assert await runner._catch_up() is True
    assert runner.progress.round == 10
