"""The round runner against hostile peers, with light fakes (issue #19).

* an exception while combining peers' messages aborts that round for this member
  (logged with its traceback, counted as a rejection) and never ends the daemon; only
  shutdown and this member's own disk or checkpoint failures propagate;
* catch-up follows only a quorum of up members: never a round beyond the federation's
  target, never an adapter that does not hash to what the quorum advertises, and a
  failed catch-up leaves the member training on. A holder that finished another round
  while we asked (an honest race in a fast federation) is believed only once a quorum
  advertise its newer adapter, and is not blamed when none does.

And, with the same fakes, whom a round's group agreement counts (issue #27): plans
count the members present, invitations are judged against them, and only the leader's
"stop waiting" rule looks at who is up now.
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
        return self.fingerprint_of(self.vector)

    def fingerprint_of(self, vector: np.ndarray) -> str:
        return hashlib.sha256(vector.tobytes()).hexdigest()[:16]

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

    def least_recently_asked(self, peers: tuple[str, ...]) -> str:
        return next((p for p in peers if p not in self.pulls), peers[0])

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
            adapters: FakeAdapters | None = None, rounds: int = 0,
            up: list[str] | None = None, heartbeat_s: float = 2.0) -> tuple[RoundRunner, list]:
    """``up``: the members seen up now (default: every member, all present too)."""
    rejections: list[tuple[str | None, str, str]] = []
    members = {"me", *(view or {})} - {"stranger"}
    services = MemberServices(
        me="me",
        config=SimpleNamespace(  # type: ignore[arg-type]
            federation=SimpleNamespace(round_deadline_s=5.0, rounds=rounds, group_size=4,
                                       final_averaging_rounds=0),
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
        heartbeat_interval=lambda: heartbeat_s,
        is_member=lambda peer: peer in members,
        up_members=lambda: sorted(members) if up is None else sorted(up),
        planning_members=lambda: sorted(members),
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
        combined, status, note = await runner._combine(4, ("a", "b", "me"), 3)
    assert (combined, status) == (None, "aborted")
    assert note is not None and "malformed ciphertext chunk" in note
    why = "round 4 aborted: ValueError: malformed ciphertext chunk"
    assert rejections == [(None, "round", why)]
    assert any(record.exc_info and record.exc_info[1] is error for record in caplog.records)
    assert runner.progress.last_aggregated_round is None


async def test_a_round_abort_is_still_an_ordinary_abort(tmp_path: Path) -> None:
    runner, rejections = _runner(tmp_path, exchange=RaisingExchange(RoundAbortedError("2 of 3")))
    assert await runner._combine(4, ("a", "b", "me"), 3) == (None, "aborted", "2 of 3")
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
        await runner._combine(4, ("a", "b", "me"), 3)


# -- catch-up bounds -------------------------------------------------------------------


def _fp(vector: np.ndarray) -> str:
    return FakeTrainer().fingerprint_of(vector)


GOOD = np.full(8, 0.25, np.float32)
EVIL = np.full(8, 9.0, np.float32)


async def test_a_lone_member_advertising_a_far_round_is_not_followed(tmp_path: Path) -> None:
    view = {"a": Advert(0, _fp(np.zeros(8, np.float32))), "b": Advert(0, "x"),
            "evil": Advert(999_999, _fp(EVIL))}
    adapters = FakeAdapters((999_999, EVIL))
    runner, _ = _runner(tmp_path, view=view, adapters=adapters, rounds=10)

    assert await runner._catch_up() is False
    assert runner.progress.round == 0
    assert adapters.pulls == []
    assert runner.s.trainer.loaded == []  # type: ignore[attr-defined]


async def test_the_quorums_adapter_is_adopted(tmp_path: Path) -> None:
    view = {name: Advert(6, _fp(GOOD)) for name in ("a", "b", "c")} | {
        "evil": Advert(999_999, _fp(EVIL))}
    adapters = FakeAdapters((6, GOOD))
    runner, _ = _runner(tmp_path, view=view, adapters=adapters, rounds=10)

    assert await runner._catch_up() is True
    assert runner.progress.round == 6
    assert adapters.pulls[0] in ("a", "b", "c")
    np.testing.assert_array_equal(runner.s.trainer.vector, GOOD)  # type: ignore[attr-defined]


async def test_a_holder_answering_with_another_adapter_loads_nothing(tmp_path: Path) -> None:
    view = {name: Advert(6, _fp(GOOD)) for name in ("a", "b", "c")}
    runner, rejections = _runner(tmp_path, view=view, adapters=FakeAdapters((6, EVIL)),
                                 rounds=10)

    assert await runner._catch_up() is False
    assert runner.progress.round == 0
    assert runner.s.trainer.loaded == []  # type: ignore[attr-defined]
    assert rejections and rejections[0][1] == "catch-up" and "hashes to" in rejections[0][2]


async def test_without_a_quorum_adapter_the_round_is_skipped_with_our_own(
    tmp_path: Path,
) -> None:
    view = {"a": Advert(6, "g1"), "b": Advert(6, "g1"), "c": Advert(6, "g2"),
            "d": Advert(6, "g2")}
    adapters = FakeAdapters((6, EVIL))
    runner, _ = _runner(tmp_path, view=view, adapters=adapters, rounds=10)

    assert await runner._catch_up() is True
    assert runner.progress.round == 6
    assert adapters.pulls == []
    assert runner.s.trainer.loaded == []  # type: ignore[attr-defined]


NEWER = np.full(8, 0.5, np.float32)


async def test_a_holders_newer_adapter_is_adopted_once_a_quorum_advertise_it(
    tmp_path: Path,
) -> None:
    """The late joiner of a fast federation (rounds of a second) was refused every
    holder's answer: each had finished another round since the plan ("response is for
    round 9, the quorum advertises 8"), and was blamed for it."""
    view = {name: Advert(8, _fp(GOOD)) for name in ("a", "b", "c")}
    adapters = FakeAdapters((9, NEWER))  # the holder finished round 9 meanwhile
    runner, rejections = _runner(tmp_path, view=view, adapters=adapters, rounds=20)

    async def heartbeats_catch_up() -> None:
        await asyncio.sleep(0.5)
        view.update({name: Advert(9, _fp(NEWER)) for name in ("a", "b", "c")})

    beat = asyncio.create_task(heartbeats_catch_up())
    assert await runner._catch_up() is True
    await beat
    assert runner.progress.round == 9
    np.testing.assert_array_equal(runner.s.trainer.vector, NEWER)  # type: ignore[attr-defined]
    assert rejections == []


async def test_a_newer_adapter_no_quorum_advertises_is_dropped_without_blame(
    tmp_path: Path,
) -> None:
    view = {name: Advert(8, _fp(GOOD)) for name in ("b", "c", "d")}
    view["a"] = Advert(9, _fp(EVIL))  # only a member outside the quorum vouches for it
    adapters = FakeAdapters((9, EVIL))
    runner, rejections = _runner(tmp_path, view=view, adapters=adapters, rounds=20,
                                 heartbeat_s=0.2)

    assert await runner._catch_up() is False
    assert runner.progress.round == 0
    assert runner.s.trainer.loaded == []  # type: ignore[attr-defined]
    assert rejections == []  # an honest holder moves on; a hostile one gains nothing


@pytest.mark.parametrize(("answer_round", "target"), [(7, 20), (11, 10)],
                         ids=["older-than-advertised", "beyond-the-target"])
async def test_an_answer_older_than_advertised_or_beyond_the_target_is_refused(
    tmp_path: Path, answer_round: int, target: int
) -> None:
    view = {name: Advert(8, _fp(GOOD)) for name in ("a", "b", "c")}
    runner, rejections = _runner(tmp_path, view=view, rounds=target,
                                 adapters=FakeAdapters((answer_round, EVIL)))

    assert await runner._catch_up() is False
    assert runner.s.trainer.loaded == []  # type: ignore[attr-defined]
    assert rejections and f"response is for round {answer_round}" in rejections[0][2]


async def test_claims_beyond_the_target_vouch_for_nothing(tmp_path: Path) -> None:
    view = {name: Advert(12, _fp(EVIL)) for name in ("a", "b", "c")}
    runner, _ = _runner(tmp_path, view=view, adapters=FakeAdapters((12, EVIL)), rounds=10)

    assert await runner._catch_up() is False
    assert runner.progress.round == 0


# -- whom the group agreement counts -----------------------------------------------------


async def test_a_round_plans_over_the_members_present_and_invites_those_seen_down_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # b and c are present (heard within three down times) but not up: late heartbeats
    runner, _ = _runner(tmp_path, view={"b": Advert(0, "f"), "c": Advert(0, "f")},
                        up=["me"])
    seen: dict[str, Any] = {}

    async def agree(**kwargs: Any) -> Any:
        seen.update(kwargs)
        return SimpleNamespace(reason="recorded")

    monkeypatch.setattr("fedswarm.daemon.round_runner.form_group", agree)
    assert await runner._form_group(1) == "recorded"
    assert list(seen["view"]) == ["b", "c", "me"]  # planned with, not only "me"
    assert list(seen["view_now"]()) == ["b", "c", "me"]  # invitations judged against them
    assert list(seen["up_now"]()) == ["me"]  # the leader's stop-waiting rule only
    assert seen["past"].round == 1 and seen["past"]("b") is False  # b's heartbeat: round 0
    assert seen["moved_on"].round == 1 and seen["moved_on"].later_round_only


async def test_the_exchange_stops_expecting_members_whose_heartbeats_stopped(
    tmp_path: Path,
) -> None:
    """A killed member (down: no heartbeat within the down time) is given up like one that
    moved on, so its group does not wait out the step deadlines (issue #27)."""
    seen: dict[str, Any] = {}

    class Recording(RaisingExchange):
        async def combine(self, ctx: Any, weight: float) -> Any:
            seen["moved_on"] = ctx.moved_on
            raise RoundAbortedError("recorded")

    view = {"killed": Advert(0, "f", up=False, round=4), "alive": Advert(0, "f", round=4),
            "ahead": Advert(0, "f", round=5)}
    runner, _ = _runner(tmp_path, exchange=Recording(RuntimeError("unused")), view=view)
    await runner._combine(4, ("alive", "ahead", "killed", "me"), 3)
    left = seen["moved_on"]
    assert left("killed") and left("ahead") and not left("alive")
