"""``kill -9`` one daemon of a live federation 20+ times, at chosen moments, and restart it.

Why one test with many kills: a crash is only interesting at the moment it lands, and
every moment costs a daemon restart (~10 s of CPU). One federation of three real
daemons stays up; one of them (the victim) is killed while training, grouping,
aggregating (its update on the wire), checkpointing, starting up, or at a random
moment, then restarted. After every kill, with the process dead, its state directory
must show:

* SQLite ``integrity_check`` ok;
* every round that was ever seen finished (complete, local_only, aborted, caught_up,
  initial) is still there with the same status and adapter fingerprint;
* ``checkpoint/LATEST`` names a checkpoint whose files match their recorded sha256,
  whose round is at least the last finished round in the database, and which never
  goes backwards from one kill to the next.

After each restart the daemon must come back at (or past) its checkpoint's round,
report the rounds it found in progress as rolled back, and at the end the restarted
daemon and the two survivors must still be finishing rounds.

The victim's process group is killed, as systemd does with a unit's cgroup, so no
helper process (HE pool, resource tracker) of a dead daemon outlives it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fedswarm.daemon.demo.local_federation import LocalFederation, PeerProcess
from fedswarm.daemon.state import StateStore
from fedswarm.learning.checkpoint_files import has_checkpoint, latest_dir, verify_dir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

KILLS = 20
# The loop ends at the 20th kill (about 150 s on a quiet 2-core box); the budget is only
# the give-up time. 270 s ran out at 19 kills once with the box's load at 6.7.
LOOP_BUDGET_S = 360.0
STARTUP_WAIT_S = 90.0
STATE_WAIT_S = 10.0
FINAL_PROGRESS_S = 90.0
MOMENTS = ("training", "checkpointing", "startup", "aggregating", "random")
FINISHED = ("initial", "complete", "local_only", "aborted", "caught_up")
ROLLED_BACK_LOG = re.compile(r"rounds \[([\d, ]*)\] were interrupted by a restart")


@dataclass
class Snapshot:
    """What a dead daemon left on disk."""

    finished: dict[int, tuple[str, str | None]]
    in_progress: list[int]
    checkpoint_round: int


@dataclass
class KillLog:
    moments: list[str] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    history: dict[int, tuple[str, str | None]] = field(default_factory=dict)
    interrupted: set[int] = field(default_factory=set)
    checkpoint_round: int = 0


def kill_group(peer: PeerProcess) -> None:
    """SIGKILL the daemon and anything it spawned (it leads its own session)."""
    process = peer.process
    assert process is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def snapshot(peer: PeerProcess) -> Snapshot:
    """Read the dead daemon's database and checkpoint, asserting they are intact."""
    store = StateStore.open(peer.state_dir)
    try:
        assert store.integrity_ok(), f"{store.path}: integrity_check failed"
        rounds = store.rounds(limit=1_000_000)
    finally:
        store.close()
    root = peer.state_dir / "checkpoint"
    checkpoint_round = 0
    if has_checkpoint(root):
        checkpoint_round = int(verify_dir(latest_dir(root))["round"])
    return Snapshot(
        finished={r.round: (r.status, r.adapter_fingerprint)
                  for r in rounds if r.status in FINISHED},
        in_progress=[r.round for r in rounds if r.status == "in_progress"],
        checkpoint_round=checkpoint_round,
    )


def check_against_history(snap: Snapshot, log: KillLog, when: str) -> None:
    for round_number, record in log.history.items():
        assert snap.finished.get(round_number) == record, (
            f"{when}: round {round_number} was {record}, now "
            f"{snap.finished.get(round_number)}"
        )
    last_finished = max((r for r, (s, _) in snap.finished.items() if s != "initial"), default=0)
    assert snap.checkpoint_round >= last_finished, (
        f"{when}: LATEST is round {snap.checkpoint_round} but round {last_finished} is "
        "recorded finished"
    )
    assert snap.checkpoint_round >= log.checkpoint_round, (
        f"{when}: checkpoint went back from {log.checkpoint_round} to {snap.checkpoint_round}"
    )


def watch_status(peer: PeerProcess, log: KillLog) -> dict[str, Any] | None:
    """Poll the victim once; a status must never show a round below its checkpoint."""
    if not peer.running():
        pytest.fail(f"victim exited by itself (code {peer.process and peer.process.poll()}):\n"
                    + tail(peer))
    status = peer.try_status()
    if status is not None:
        assert status["round"] >= log.checkpoint_round, (
            f"restarted at round {status['round']} below its checkpoint {log.checkpoint_round}"
        )
    return status


def wait_for_moment(peer: PeerProcess, moment: str, rng: random.Random, log: KillLog) -> str:
    """Return when it is time to kill; says what the daemon was doing (as far as we saw)."""
    if moment == "startup":  # interpreter start, model load, restore, listen
        time.sleep(rng.uniform(0.3, 4.0))
        status = watch_status(peer, log)
        return "startup" if status is None else f"startup/{status['state']}"
    up_deadline = time.monotonic() + STARTUP_WAIT_S
    while (status := watch_status(peer, log)) is None:
        if time.monotonic() > up_deadline:
            pytest.fail(f"restarted daemon not up after {STARTUP_WAIT_S:.0f} s:\n" + tail(peer))
        time.sleep(0.05)
    if moment == "random":
        time.sleep(rng.uniform(0.0, 3.0))
        status = watch_status(peer, log)
        return "random/" + ("?" if status is None else str(status["state"]))
    deadline = time.monotonic() + STATE_WAIT_S
    seen = str(status["state"])
    while time.monotonic() < deadline:
        if seen == moment:
            time.sleep(rng.uniform(0.0, 0.05))
            return moment
        time.sleep(0.02)
        status = watch_status(peer, log)
        seen = seen if status is None else str(status["state"])
    return f"missed-{moment}/{seen}"


def tail(peer: PeerProcess, lines: int = 20) -> str:
    text = peer.log_path.read_text(errors="replace") if peer.log_path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def logged_rollbacks(peer: PeerProcess) -> set[int]:
    rounds: set[int] = set()
    for line in peer.log_path.read_text(errors="replace").splitlines():
        try:
            message = json.loads(line).get("msg", "")
        except (ValueError, AttributeError):
            continue
        match = ROLLED_BACK_LOG.search(str(message))
        if match:
            rounds.update(int(x) for x in match.group(1).split(",") if x.strip())
    return rounds


def last_finished(peer: PeerProcess) -> int:
    status = peer.try_status()
    return int(status["last_finished_round"]) if status else -1


def test_daemon_killed_20_times_mid_round_loses_no_finished_round(tmp_path: Path) -> None:
    seed = int(os.environ.get("FEDSWARM_CRASH_SEED", str(int(time.time()))))
    print(f"FEDSWARM_CRASH_SEED={seed}")
    rng = random.Random(seed)
    federation = LocalFederation(
        tmp_path, peers=3, rounds=0, secure_aggregation="none",
        local_steps=3, batch_size=4, round_deadline_s=3.0,
    )
    log = KillLog()
    with federation:
        victim, survivors = federation.peers[2], federation.peers[:2]
        federation.wait_rounds(1, timeout_s=180)
        survivors_at_start = [last_finished(p) for p in survivors]
        loop_deadline = time.monotonic() + LOOP_BUDGET_S
        while len(log.moments) < KILLS and time.monotonic() < loop_deadline:
            moment = MOMENTS[len(log.moments) % len(MOMENTS)]
            started = time.monotonic()
            log.moments.append(wait_for_moment(victim, moment, rng, log))
            log.waits.append(round(time.monotonic() - started, 1))
            kill_group(victim)
            snap = snapshot(victim)
            check_against_history(snap, log, f"kill {len(log.moments)} ({log.moments[-1]})")
            log.history.update(snap.finished)
            log.interrupted.update(snap.in_progress)
            log.checkpoint_round = snap.checkpoint_round
            assert all(p.running() for p in survivors), "a survivor died"
            federation.start_peer(victim)
        print(f"kills at: {list(zip(log.moments, log.waits, strict=True))}")
        assert len(log.moments) >= KILLS, (
            f"only {len(log.moments)} kills in {LOOP_BUDGET_S:.0f} s: {log.moments}"
        )
        hit = {m.split("/")[0] for m in log.moments}
        assert {"training", "checkpointing"} <= hit, log.moments

        # The restarted victim and the survivors keep finishing rounds.
        deadline = time.monotonic() + FINAL_PROGRESS_S
        while time.monotonic() < deadline:
            watch_status(victim, log)
            if (last_finished(victim) > log.checkpoint_round
                    and all(last_finished(p) > s for p, s in zip(survivors, survivors_at_start,
                                                                   strict=True))):
                break
            time.sleep(0.5)
        else:
            pytest.fail(
                f"no progress after the last restart: victim {last_finished(victim)} "
                f"(checkpoint {log.checkpoint_round}), survivors "
                f"{[last_finished(p) for p in survivors]} (were {survivors_at_start})\n"
                + tail(victim)
            )
        print("after the last restart, rounds aggregated:",
              [(s or {}).get("rounds_aggregated") for s in federation.statuses()])
    codes = federation.stop()
    assert all(code == 0 for code in codes.values()), codes

    final = snapshot(victim)
    check_against_history(final, log, "after the final stop")
    # SIGTERM may interrupt the round in training: that one is legitimately in progress.
    still_open = set(final.in_progress) - {max(final.in_progress, default=-1)}
    assert not (log.interrupted & still_open), (log.interrupted, final.in_progress)
    missing = log.interrupted - logged_rollbacks(victim)
    assert not missing, f"rounds {sorted(missing)} were in progress at a kill but never rolled back"
    leftovers = [p.name for p in (victim.state_dir / "checkpoint").iterdir()
                 if ".tmp" in p.name]
    assert not leftovers, f"temporary checkpoint files left behind by kills: {leftovers}"
