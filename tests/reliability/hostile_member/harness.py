"""The test side of the hostile-member suite: make a member hostile, watch, judge.

``make_hostile`` turns one peer of a prepared ``LocalFederation`` into a hostile member
(its command line goes through ``launch.py`` with a plan); ``give_identity`` replaces a
peer's key with one chosen for the attack (a peer id that sorts lowest, roles in given
rounds: what an attacker does by generating keys until one fits), updating every
member's roster. ``CheckpointKeeper`` copies each honest member's adapter of every
round as it is written (a daemon keeps only its two newest checkpoints), so a test can
compare what an attacker recovered with what a victim really had.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fedswarm.daemon.demo.local_federation import LocalFederation, PeerProcess
from fedswarm.federation.groups.plan import group_id
from fedswarm.learning.adapter_vector import flatten_state
from fedswarm.learning.checkpoint_files import round_dir_name
from fedswarm.p2p.identity import Identity
from fedswarm.p2p.roster import Member, Roster
from fedswarm.secagg.roles import assign_roles

from tests.reliability.hostile_member.attacks import Plan as HostilePlan

HERE = Path(__file__).resolve().parent
LAUNCH = HERE / "launch.py"

__all__ = [
    "CheckpointKeeper", "HostilePlan", "PeerReport", "correlation", "give_identity",
    "keep_out_of_the_lowest_ids", "load_adapter", "make_hostile", "place_attacker_below",
    "read_loot", "report", "roles_of",
]


def make_hostile(federation: LocalFederation, peer: PeerProcess, plan: HostilePlan) -> Path:
    """Start ``peer`` through the hostile launcher with ``plan``; returns the plan's path."""
    path = federation.workdir / f"hostile-plan-{peer.index + 1}.json"
    plan.save(path)
    peer.command_prefix = (sys.executable, str(LAUNCH), str(path), "--")
    return path


def keep_out_of_the_lowest_ids(federation: LocalFederation, peers: list[PeerProcess]) -> None:
    """Give ``peers`` keys whose peer ids do not sort near the bottom.

    The attacker's key must sort below every honest id (it then leads every group); with
    honest ids drawn at random, the lowest of them is sometimes so low that 20,000 tries
    find no key below it (the suite failed that way once). Honest ids whose ninth
    character is 'H' or later (about half of them) leave a third of all keys below.
    """
    for peer in peers:
        give_identity(federation, peer, lambda pid: pid[8] >= "H")


def place_attacker_below(federation: LocalFederation, attacker: PeerProcess,
                         honest: list[PeerProcess],
                         fits: Callable[[str, list[str]], bool], draws: int = 12) -> str:
    """Give ``honest`` fresh ids and ``attacker`` an id that ``fits(id, honest ids)``.

    Role constraints (who is A and who is D in given rounds) leave some honest id sets
    with no fitting attacker key at all: about one draw in four, measured. So the honest
    ids are drawn again until a fitting key turns up, instead of searching one set for
    ever (the suite once failed with "no key in 20000 fits").
    """
    for _ in range(draws):
        keep_out_of_the_lowest_ids(federation, honest)
        honest_ids = [p.peer_id for p in honest]
        try:
            return give_identity(federation, attacker, _against(fits, honest_ids),
                                 tries=4_000)
        except NoFittingKeyError:
            continue
    raise NoFittingKeyError(f"no attacker key fits any of {draws} honest id sets")


def _against(fits: Callable[[str, list[str]], bool], ids: list[str]) -> Callable[[str], bool]:
    return lambda pid: fits(pid, ids)


class NoFittingKeyError(RuntimeError):
    """No generated key had a peer id with the wanted property."""


def give_identity(federation: LocalFederation, peer: PeerProcess,
                  fits: Callable[[str], bool], tries: int = 20_000) -> str:
    """Replace ``peer``'s key with a fresh one whose peer id ``fits``; rewrite every roster."""
    for _ in range(tries):
        identity = Identity.generate()
        if fits(identity.peer_id):
            break
    else:
        raise NoFittingKeyError(f"no key in {tries} fits")
    key_path = peer.directory / "identity.key"
    key_path.unlink()
    identity.save(key_path)
    peer.peer_id = identity.peer_id
    roster = Roster(
        federation_id=federation.federation_id,
        members=tuple(Member(org=p.org, peer_id=p.peer_id, addrs=(p.multiaddr,))
                      for p in federation.peers),
    )
    for member in federation.peers:
        roster.save(member.directory / "roster.toml")
    return identity.peer_id


def roles_of(members: Sequence[str], round: int) -> tuple[str, str]:
    """(aggregator, decryptor) of the group ``members`` in ``round``, as every member computes."""
    ordered = tuple(sorted(members))
    return assign_roles(ordered, round, group_id(round, ordered))


def read_loot(loot_dir: Path) -> list[dict[str, Any]]:
    """What the hostile member recorded, one dict per event (empty when it did nothing)."""
    path = loot_dir / "loot.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def adapter_file(directory: Path) -> Path:
    return directory / "adapter" / "adapter_model.safetensors"


def load_adapter(round_dir: Path) -> np.ndarray:
    """A checkpointed adapter, flattened in the trainer's (sorted-name) order."""
    from safetensors.torch import load_file

    return flatten_state(load_file(str(adapter_file(round_dir))))[0]


class CheckpointKeeper:
    """Copies every finished round's adapter of the watched peers (``wait_rounds`` on_poll)."""

    def __init__(self, peers: Sequence[PeerProcess], into: Path) -> None:
        self.peers = list(peers)
        self.into = into
        self.kept: dict[tuple[str, int], Path] = {}

    def __call__(self, statuses: list[dict[str, Any] | None]) -> None:
        for peer in self.peers:
            root = peer.state_dir / "checkpoint"
            if not root.exists():
                continue
            for directory in root.glob("round-*"):
                round = int(directory.name.split("-")[1])
                if (peer.org, round) in self.kept or not (directory / "meta.json").exists():
                    continue
                target = self.into / peer.org / round_dir_name(round) / "adapter"
                try:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(adapter_file(directory), target / "adapter_model.safetensors")
                except OSError:
                    continue  # removed as we copied: a newer round replaced it
                self.kept[(peer.org, round)] = target.parent

    def adapter(self, peer: PeerProcess, round: int) -> np.ndarray:
        return load_adapter(self.kept[(peer.org, round)])


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two vectors (0 when either is constant)."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


@dataclass
class PeerReport:
    """What a test reads of one daemon at the end: API views, log, and whether it ran."""

    org: str
    peer_id: str
    running: bool
    rounds: list[dict[str, Any]]
    traffic: dict[str, Any]
    security: dict[str, Any]
    log: str
    exit_code: int | None = None

    def round(self, number: int) -> dict[str, Any]:
        found = [r for r in self.rounds if r["round"] == number]
        assert found, f"{self.org} has no record of round {number}: {self.rounds}"
        return found[0]

    def rejected_reasons(self) -> str:
        return " | ".join(str(r.get("reason")) for r in self.security.get("rejected", []))


def report(peer: PeerProcess) -> PeerReport:
    """What ``peer`` reports now; a daemon that is not running reports only its log."""
    running = peer.running()
    return PeerReport(
        org=peer.org,
        peer_id=peer.peer_id,
        running=running,
        rounds=list(peer.get("/api/rounds", timeout=10)) if running else [],
        traffic=dict(peer.get("/api/traffic", timeout=10)) if running else {},
        security=dict(peer.get("/api/security", timeout=10)) if running else {},
        log=peer.log_path.read_text(errors="replace") if peer.log_path.exists() else "",
    )

