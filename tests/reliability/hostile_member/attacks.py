"""Hostile roster members: what a member running modified code does to the others (issue #19).

A hostile member here is a real ``fedswarm run`` daemon with a valid identity on the
roster, started by ``launch.py``, which calls ``install(plan)`` before the normal CLI
entry point. ``install`` monkeypatches the behaviours named in the plan; everything
else (training, group agreement, secure aggregation, heartbeats) is the product's own
code, so the attacker takes part in rounds exactly like an honest member except where
an attack says otherwise.

A plan (``Plan``, a JSON file) maps rounds to attacks: ``rounds`` activates an attack
in one round, ``from_round`` from that round on. One federation can therefore run
several attacks one after another, with honest rounds in between that show the honest
members recover. The round is the attacker's own (its round runner's), which is the
round its group runs.

Each attack records what it did and what it obtained in ``loot.jsonl`` (one JSON object
a line) in the plan's ``loot_dir``; vectors it recovered go next to it as ``.npy``, so
the test judges the attack by what the attacker got, not by what it was told.

This file is loaded by path (``launch.py``), not imported as ``tests.…``: it runs inside
the daemon process, and needs nothing but the installed ``fedswarm`` package.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("fedswarm.hostile")

ATTACKS = (
    "no_contributor_floor",
    "phantom_group",
    "padded_group",
    "colluding_group",
    "share_update",
    "record_update",
    "malformed_sum",
    "unbounded_result",
    "inbound_flood",
    "catch_up_takeover",
    "plain_weights",
    "fedmkt_downgrade",
)
#: The far-ahead round every takeover heartbeat advertises (valid on the wire) ...
TAKEOVER_ROUND = 999_999
#: ... each preceded by one heartbeat with a round the wire refuses, in turn (above
#: ``MAX_ROUND``: it overflowed SQLite; negative; not a number).
TAKEOVER_BAD_ROUNDS: tuple[Any, ...] = (2**63, -3, "garbage")
#: The adapter the takeover hands out: every value 0.5 (honest adapters stay far below).
TAKEOVER_VALUE = 0.5
#: What plain_weights sends each honest member, in turn (one per recipient and round).
PLAIN_WEIGHTS: tuple[float, ...] = (1e300, 1e308, float("inf"), float("nan"))


@dataclass
class Plan:
    """Which attack runs in which round, where the loot goes, and the attacks' targets."""

    loot_dir: Path
    rounds: dict[int, str] = field(default_factory=dict)
    from_round: dict[str, int] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def active(self, attack: str, round: int) -> bool:
        start = self.from_round.get(attack)
        return self.rounds.get(round) == attack or (start is not None and round >= start)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({
            "loot_dir": str(self.loot_dir),
            "rounds": {str(r): a for r, a in self.rounds.items()},
            "from_round": self.from_round,
            "options": self.options,
        }, indent=1))

    @classmethod
    def load(cls, path: Path) -> Plan:
        doc = json.loads(path.read_text())
        plan = cls(
            loot_dir=Path(doc["loot_dir"]),
            rounds={int(r): a for r, a in doc.get("rounds", {}).items()},
            from_round=dict(doc.get("from_round", {})),
            options=dict(doc.get("options", {})),
        )
        unknown = ({*plan.rounds.values(), *plan.from_round} - set(ATTACKS))
        if unknown:
            raise ValueError(f"unknown attack(s) {sorted(unknown)}; known: {ATTACKS}")
        return plan


class Hostile:
    """What every attack shares: the plan, the daemon it runs in, its round, its loot."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.daemon: Any = None  # fedswarm.daemon.service.Daemon, once its runner is built
        self._round = 0
        self.session: Any = None  # the secure-aggregation session running now, if any
        plan.loot_dir.mkdir(parents=True, exist_ok=True)
        # called with the round when it starts, and with (round, members) once its group
        # is formed
        self.on_round: list[Callable[[int], None]] = []
        self.on_group: list[Callable[[int, tuple[str, ...]], None]] = []

    @property
    def round(self) -> int:
        """The round the attacker is in: the one its runner runs, or caught up to."""
        runner = getattr(self.daemon, "runner", None)
        return max(self._round, runner.progress.round if runner is not None else 0)

    @round.setter
    def round(self, value: int) -> None:
        self._round = value

    def roles(self) -> dict[str, Any]:
        """The running secure session's group and roles, for the loot."""
        session = self.session
        if session is None:
            return {}
        return {"members": list(session.spec.members), "aggregator": session.aggregator,
                "decryptor": session.decryptor}

    def active(self, attack: str, round: int | None = None) -> bool:
        return self.plan.active(attack, self.round if round is None else round)

    def record(self, attack: str, **fields: Any) -> None:
        entry = {"attack": attack, "round": self.round, "at": time.time(), **fields}
        log.warning("HOSTILE %s", json.dumps(entry, default=str))
        with (self.plan.loot_dir / "loot.jsonl").open("a") as out:
            out.write(json.dumps(entry, default=str) + "\n")

    def save_vector(self, name: str, vector: np.ndarray) -> Path:
        path = self.plan.loot_dir / f"{name}.npy"
        np.save(path, np.asarray(vector))
        return path


def install(plan: Plan) -> Hostile:
    """Patch this process for every attack the plan names; returns the shared state."""
    hostile = Hostile(plan)
    _track_daemon_and_round(hostile)
    named = {*plan.rounds.values(), *plan.from_round}
    for attack in ATTACKS:
        if attack in named:
            INSTALLERS[attack](hostile)
    log.warning("HOSTILE member installed: %s", sorted(named))
    return hostile


def _track_daemon_and_round(hostile: Hostile) -> None:
    """Keep a handle on the daemon, its round, its group and its secure session."""
    from fedswarm.daemon import round_runner, service
    from fedswarm.secagg.session import _Session

    build_runner = service.Daemon._build_runner

    def tracked_build_runner(self: Any, *args: Any, **kwargs: Any) -> Any:
        hostile.daemon = self
        return build_runner(self, *args, **kwargs)

    run_round = round_runner.RoundRunner.run_round

    async def tracked_run_round(self: Any, round: int) -> None:
        hostile.round = round
        for callback in hostile.on_round:
            callback(round)
        await run_round(self, round)

    combine = round_runner.RoundRunner._combine

    async def tracked_combine(self: Any, round: int, members: tuple[str, ...],
                              *rest: Any) -> Any:
        for callback in hostile.on_group:
            callback(round, members)
        return await combine(self, round, members, *rest)

    run_session = _Session.run

    async def tracked_session(self: Any) -> Any:
        hostile.session = self
        try:
            return await run_session(self)
        finally:
            hostile.session = None

    service.Daemon._build_runner = tracked_build_runner  # type: ignore[method-assign]
    round_runner.RoundRunner.run_round = tracked_run_round  # type: ignore[method-assign]
    round_runner.RoundRunner._combine = tracked_combine  # type: ignore[method-assign]
    _Session.run = tracked_session  # type: ignore[method-assign]


# -- control: a member without the defence ----------------------------------------------


def no_contributor_floor(hostile: Hostile) -> None:
    """Not an attack: this member runs without the contributor floor (before issue #19).

    A control for the harness, never used in CI: with it, the *victim* of
    ``phantom_group`` behaves like the code the issue measured (it reveals with the
    Shamir threshold alone, t = 2 of 3), so the attacker must recover its update. That
    the suite then fails shows the phantom test can fail (docs/reliability.md).
    """
    from fedswarm.secagg import session as secagg_session

    secagg_session.MIN_CONTRIBUTORS = 2
    hostile.record("no_contributor_floor", min_contributors=2)


# -- 2. phantom third member ------------------------------------------------------------


def phantom_group(hostile: Hostile) -> None:
    """Lead a "group" of itself, the victim and a made-up peer, then aggregate a zero vector.

    The attacker's peer id must sort below the victim's (about 1 key in 4 does), so it
    is the group's leader. It invents a peer id above its own such that the roles of
    the padded group fall on the victim (aggregator A) and itself (decryptor D), invites
    the victim alone, finalises the group as if the phantom had accepted, and runs the
    product's secure aggregation with its own contribution-floor lowered to 2 and an
    all-zero update. Had the victim's session gone on, D's result would be
    ``w_v u_v / (w_v + w_a)``, i.e. the victim's update; the attacker saves
    ``average * total / (total - own weight)`` as ``phantom-r<round>.npy``.

    The honest victim must reveal nothing: it never joins (with plan-matching
    invitations it does not admit a group naming a peer it does not see up) or it
    aborts before anything leaves it, so the attacker recovers nothing.
    """
    _install_padded_group(hostile, "phantom_group", padding="made_up")


def padded_group(hostile: Hostile) -> None:
    """As ``phantom_group``, but the padding is a real member that is up and never invited.

    The attacker picks, among the members it sees up, one its and the victim's plan put
    in their group and whose presence gives the roles A = victim, D = attacker. The
    invitation names only members of the victim's own planned group, led by its planned
    leader, so plan matching admits it; the padding member, never invited, never takes
    part. What must stop the attack is the contribution floor: with two members sharing
    keys the victim aborts before its upload or a single unmask share leaves it.
    """
    _install_padded_group(hostile, "padded_group", padding="uninvited")


def colluding_group(hostile: Hostile) -> None:
    """As ``padded_group``, but the third member is a colluder that takes part.

    The leader invites only itself, the victim and ``options["colluder"]`` out of a
    larger planned group; the invitation is a subset of the victim's plan, led by its
    planned leader. The colluder (another hostile member running ``share_update``) joins
    and contributes, so three contributors are in the sum and every check passes; it
    hands its update and weight to the attacker out of band (the shared loot folder). From
    the average, its own zero update and the colluder's, the attacker solves for the
    victim's: ``u_v = (W avg - w_c u_c) / (W - w_a - w_c)``. The victim must not end up in
    such a group: two colluders must not be able to shrink its group to themselves.
    """
    _install_padded_group(hostile, "colluding_group", padding="colluder")


def share_update(hostile: Hostile) -> None:
    """The colluder's part of ``colluding_group``: save its update (clipped as secure
    aggregation clips it) and weight where the attacker reads them."""
    _save_own_update(hostile, "share_update", "colluder-input")


def record_update(hostile: Hostile) -> None:
    """Not an attack: instrumentation of an otherwise honest member, which saves the
    update it contributes (``own-input-r<round>.npy``) so a test can compare what an
    attacker recovered with it (a member's checkpoint holds the group's average)."""
    _save_own_update(hostile, "record_update", "own-input")


def _save_own_update(hostile: Hostile, name: str, prefix: str) -> None:
    from fedswarm.federation.averaging.bounds import clip_vector
    from fedswarm.federation.averaging.secure import SecureAggregation
    from fedswarm.secagg.params import SecAggParams

    real_average = SecureAggregation.average

    async def saving_average(self: Any, ctx: Any, vector: np.ndarray, weight: float,
                             params: Any = None) -> Any:
        if hostile.active(name, ctx.round):
            hostile.save_vector(f"{prefix}-r{ctx.round}",
                                clip_vector(vector, params or SecAggParams()))
            hostile.record(name, weight=weight, members=list(ctx.members))
        return await real_average(self, ctx, vector, weight, params)

    SecureAggregation.average = saving_average  # type: ignore[method-assign]


def _install_padded_group(hostile: Hostile, attack: str, padding: str) -> None:
    from fedswarm.daemon import round_runner
    from fedswarm.federation.averaging.secure import SecureAggregation
    from fedswarm.federation.groups.agreement import Alone, Formed
    from fedswarm.federation.groups.messages import (
        Acceptance,
        GroupFinal,
        Invitation,
        decode_message,
    )
    from fedswarm.federation.groups.plan import group_id
    from fedswarm.federation.link import GROUP_KIND, send_before
    from fedswarm.p2p.identity import Identity
    from fedswarm.secagg import session as secagg_session
    from fedswarm.secagg.roles import assign_roles

    def roles_fit(me: str, victim: str, third: str, round: int) -> bool:
        members = tuple(sorted((me, victim, third)))
        return assign_roles(members, round, group_id(round, members)) == (victim, me)

    def third_for(me: str, victim: str, round: int, view: list[str]) -> str | None:
        if padding == "colluder":
            return str(hostile.plan.options["colluder"])
        if padding == "uninvited":
            fitting = [p for p in view if p not in (me, victim) and p > me
                       and roles_fit(me, victim, p, round)]
            return fitting[0] if fitting else None
        for _ in range(10_000):
            phantom = Identity.generate().peer_id
            if phantom > me and roles_fit(me, victim, phantom, round):
                return phantom
        return None

    resync: dict[int, float] = {}  # round -> when the members left out stop waiting

    async def wait_out(round: int) -> None:
        """Wait as long as the members left out wait for an invitation, so our next
        round's invitation does not reach them while they are still in this one."""
        await asyncio.sleep(max(0.0, resync.pop(round, 0.0) - time.monotonic()))

    real_form_group = round_runner.form_group

    async def hostile_form_group(**kw: Any) -> Any:
        round, me = kw["round"], kw["me"]
        if not hostile.active(attack, round):
            return await real_form_group(**kw)
        config = kw["config"]
        resync[round] = time.monotonic() + config.invite_window + config.final_grace
        victim = str(hostile.plan.options["phantom_victim"])
        third = third_for(me, victim, round, list(kw["view"]))
        if third is None:
            hostile.record(attack, skipped=f"no {padding} padding gives the roles wanted")
            return await real_form_group(**kw)
        members = tuple(sorted((me, victim, third)))
        invitation = Invitation(round, group_id(round, members), me, members)
        link, mailbox = kw["link"], kw["mailbox"]
        invited = (victim, third) if padding == "colluder" else (victim,)
        for peer in invited:
            await send_before(link, peer, GROUP_KIND, round, invitation.encode(), None)
        deadline = time.monotonic() + config.invite_window
        waiting = set(invited)
        while waiting and time.monotonic() < deadline:
            try:
                letter = await mailbox.get(GROUP_KIND, round, deadline - time.monotonic())
            except TimeoutError:
                break
            message = decode_message(letter.payload)
            if (isinstance(message, Acceptance) and message.group_id == invitation.group_id):
                waiting.discard(letter.sender)
        accepted = victim not in waiting
        hostile.record(attack, victim=victim, padding=third, padding_kind=padding,
                       members=members, victim_accepted=accepted)
        if not accepted:
            await wait_out(round)
            return Alone("the victim did not accept the padded group")
        final = GroupFinal(round, invitation.group_id, me, members)
        for peer in invited:
            await send_before(link, peer, GROUP_KIND, round, final.encode(), None)
        return Formed(round, members, me, invitation.group_id)

    real_average = SecureAggregation.average

    async def hostile_average(self: Any, ctx: Any, vector: np.ndarray, weight: float,
                              params: Any = None) -> Any:
        if not hostile.active(attack, ctx.round) or ctx.round not in resync:
            return await real_average(self, ctx, vector, weight, params)
        floor = secagg_session.MIN_CONTRIBUTORS
        secagg_session.MIN_CONTRIBUTORS = 2  # the attacker's own session would stop at 3
        try:
            # A naive victim hands its update over within a step of its one wait for the
            # padding (its KEYS step); the attacker waits 1.5 times that, not its full role
            # waits, so the honest members' next round is not held up by it.
            result = await asyncio.wait_for(
                real_average(self, ctx, np.zeros_like(vector), weight, params),
                timeout=1.5 * self.step_timeout_s,
            )
        except BaseException as exc:
            hostile.record(attack, recovered=False, error=f"{type(exc).__name__}: {exc}")
            await wait_out(ctx.round)
            raise
        finally:
            secagg_session.MIN_CONTRIBUTORS = floor
        others = result.total_weight - weight
        recovered = np.asarray(result.average, dtype=np.float64) * result.total_weight
        if padding == "colluder":  # subtract what the colluder put in
            shared = [e for e in _read_loot(hostile) if e["attack"] == "share_update"
                      and e["round"] == ctx.round]
            if shared:
                colluder = np.load(hostile.plan.loot_dir / f"colluder-input-r{ctx.round}.npy")
                recovered -= shared[-1]["weight"] * colluder.astype(np.float64)
                others -= shared[-1]["weight"]
        recovered /= others
        path = hostile.save_vector(f"{attack}-r{ctx.round}", recovered)
        hostile.record(attack, recovered=True, path=str(path),
                       survivors=list(result.survivors), total_weight=result.total_weight)
        await wait_out(ctx.round)
        return result

    round_runner.form_group = hostile_form_group  # type: ignore[assignment]
    SecureAggregation.average = hostile_average  # type: ignore[method-assign]


def _read_loot(hostile: Hostile) -> list[dict[str, Any]]:
    path = hostile.plan.loot_dir / "loot.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- 5. crash: A sends D a SUM of malformed ciphertext chunks ---------------------------


def malformed_sum(hostile: Hostile) -> None:
    """As the aggregator A, send the decryptor D random bytes instead of the encrypted sum.

    Every chunk keeps its length, so the SUM message is well formed and correctly signed;
    only TenSEAL cannot parse the chunks. D must end that round as a protocol error
    (its round recorded aborted), keep running, and complete later rounds.
    """
    from fedswarm.secagg.accumulator import CiphertextAccumulator

    real_serialise_range = CiphertextAccumulator.serialise_range

    def hostile_serialise_range(self: Any, first: int, stop: int) -> list[bytes]:
        """Each streamed SUM chunk's ciphertexts: their lengths, random bytes."""
        chunks = real_serialise_range(self, first, stop)
        if not hostile.active("malformed_sum"):
            return chunks
        garbage = [os.urandom(len(chunk)) for chunk in chunks]
        if first == 0:  # once per round: D refuses the first SUM chunk already
            hostile.record("malformed_sum", chunks=len(garbage), bytes=sum(map(len, garbage)),
                           **hostile.roles())
        return garbage

    CiphertextAccumulator.serialise_range = hostile_serialise_range  # type: ignore[method-assign]


# -- 4. unbounded result ----------------------------------------------------------------


def unbounded_result(hostile: Hostile) -> None:
    """As an ordinary member (neither A nor D), add p/4 to the masked vector and lower the
    weight slot to one unit.

    The masks hide this from A and D alike. Decrypted under v2, every coordinate of the
    average is about ``k x max_weight x C / 2 / total weight`` (hundreds, against honest
    inputs clipped to C = 1); under v3 each slot unpacks into fields that cannot leave
    their range, so the garbage stays inside the clip but not inside the range the group's
    members published (their range shifts). Honest members must refuse that average
    (round aborted, adapter kept), so their adapters stay within the clip bound.
    """
    from fedswarm.secagg.he import (
        EncryptJob,
        encrypt_vector,
        load_public_context,
        masked_contribution,
    )
    from fedswarm.secagg.quantise import quantise_weight
    from fedswarm.secagg.session import _Session

    def poisoned_chunks(job: EncryptJob) -> tuple[list[bytes], int]:
        values = masked_contribution(job)
        grid = job.grid()  # v2 or v3: the group's own grid, weight class and range
        p = grid.plain_modulus
        values[:-1] = (values[:-1] + p // 4) % p
        lowered = quantise_weight(job.weight, job.params) - 1
        values[-1] = (values[-1] - lowered) % p
        context = load_public_context(job.public_context)
        return encrypt_vector(context, values, job.params.slot_count), p

    real_segments = _Session._encrypted_segments

    async def hostile_segments(self: Any, mask_set: tuple[str, ...]) -> Any:
        if not hostile.active("unbounded_result", self.spec.round):
            async for chunks in real_segments(self, mask_set):
                yield chunks
            return
        job = self._contribution_job(mask_set)
        chunks, p = await asyncio.to_thread(poisoned_chunks, job)
        hostile.record("unbounded_result", added=p // 4, **hostile.roles())
        yield chunks  # streamed to A in UPLOAD chunks like any honest member's

    _Session._encrypted_segments = hostile_segments  # type: ignore[method-assign]


# -- 8. inbound flood ------------------------------------------------------------------


def inbound_flood(hostile: Hostile) -> None:
    """Hold as much of one member's inbound blob capacity as it lets one peer hold.

    The victim is the flood round's aggregator A, which receives every other member's
    upload as a blob. From the start of the round (before anyone uploads) the attacker
    keeps ``max_inbound_blobs_per_peer`` (4) blob streams open to the member its view
    says will be A, each declaring a blob of ``options["flood_blob_bytes"]`` (a little
    under a quarter of the victim's ``max_inbound_mb``) whose body it never finishes (a
    few bytes, then silence until the round is over or the victim times the stream out;
    then it opens another). Once the group is formed it records whether the victim really
    is A. Without a fair share the four fill ``max_inbound_mb`` but for less than one
    upload, and every other member's upload is refused as busy; with it, the attacker
    holds two, the victim must still accept the honest members' uploads (its round
    completes with all of them as survivors) and make the attacker's excess wait or
    refuse it (``inbound_waited`` and ``busy`` in its ``/api/traffic``). The attacker
    otherwise takes part honestly: its group invitation still fits in its share (why the
    blobs are a little under a quarter), its own upload does not.
    """
    from fedswarm.federation.groups.plan import group_id
    from fedswarm.secagg.roles import assign_roles

    tasks: set[asyncio.Task[None]] = set()
    target: dict[int, str] = {}

    def aggregator_of(round: int, members: list[str] | tuple[str, ...]) -> str:
        ordered = tuple(sorted(members))
        return assign_roles(ordered, round, group_id(round, ordered))[0]

    def on_round(round: int) -> None:
        if not hostile.active("inbound_flood", round):
            return
        victim = aggregator_of(round, hostile.daemon.up_members())
        if victim == hostile.daemon.identity.peer_id:
            hostile.record("inbound_flood", skipped="the attacker will be the aggregator")
            return
        target[round] = victim
        for slot in range(hostile.daemon.config.node.max_inbound_blobs_per_peer):
            task = asyncio.get_running_loop().create_task(_flood(hostile, round, victim, slot))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def on_group(round: int, members: tuple[str, ...]) -> None:
        if round in target:
            hostile.record("inbound_flood", victim=target[round], members=list(members),
                           victim_is_aggregator=aggregator_of(round, members) == target[round])

    hostile.on_round.append(on_round)
    hostile.on_group.append(on_group)


async def _flood(hostile: Hostile, round: int, victim: str, slot: int) -> None:
    """One stream slot of the flood: reopen a held blob until the round is over."""
    node = hostile.daemon.node
    length = int(hostile.plan.options["flood_blob_bytes"])
    admitted = refused = 0
    outcomes: list[str] = []
    started = time.monotonic()
    while hostile.round == round and time.monotonic() - started < 120:
        try:
            outcome = await node._call(_hold_blob, node, victim, round, length,
                                       lambda: hostile.round == round)
        except Exception as exc:  # the victim resets held streams; that is the point
            outcome = f"error: {type(exc).__name__}"
        outcomes.append(f"{time.monotonic() - started:.1f}:{outcome}")
        if outcome.startswith("admitted"):
            admitted += 1
        else:
            refused += 1
            await asyncio.sleep(0.5)
    hostile.record("inbound_flood", round=round, slot=slot, victim=victim,
                   declared_bytes=length, admitted=admitted, refused=refused, outcomes=outcomes)


async def _hold_blob(node: Any, victim: str, round: int, length: int,
                     still_flooding: Callable[[], bool]) -> str:
    """Trio side: declare a blob of ``length`` bytes, send a few, hold the stream open."""
    import trio
    from fedswarm.p2p import framing
    from fedswarm.p2p.streams import reset_stream, stream_reader
    from libp2p.custom_types import TProtocol
    from libp2p.peer.id import ID

    header = framing.BlobHeader(
        node.roster.federation_id, node.peer_id, victim, "secagg", round, length,
        hashlib.sha256(b"never sent").digest(), time.time(),
    )
    with trio.move_on_after(120):
        await node._ensure_connected(victim)
        stream = await node._host.new_stream(ID.from_base58(victim),
                                             [TProtocol(framing.BLOB_PROTOCOL)])
        try:
            await stream.write(framing.encode_signed_header(header, node.identity))
            status, reason = await framing.read_reply(stream_reader(stream))
            if status != framing.STATUS_OK:
                return f"refused {reason.split(':', 1)[0]}"
            held = time.monotonic()
            try:
                await stream.write(bytes(1024))
                read = stream_reader(stream)
                while still_flooding():  # hold our share until the victim gives up on us
                    with trio.move_on_after(0.5):
                        if not await read(64):
                            break  # the victim timed the stream out: open another
            except Exception:
                pass  # reset by the victim (its blob timeout): open another
            return f"admitted, held {time.monotonic() - held:.0f} s"
        finally:
            with trio.CancelScope(shield=True):
                await reset_stream(stream)
    return "timeout"


# -- 1. catch-up takeover --------------------------------------------------------------


def catch_up_takeover(hostile: Hostile) -> None:
    """Advertise a far-ahead round and hand whoever catches up an adapter of our choice.

    Every heartbeat advertises round 999999 (valid on the wire, with the poisoned
    adapter's fingerprint), each preceded by one whose round the wire refuses (2**63,
    -3, "garbage" in turn). Every
    ``adapter-request`` is answered with an adapter whose values are all 0.5, claimed as
    the adapter of ``options["takeover_round"]`` (the federation's last round: the
    furthest an honest member may jump). The poisoned adapter's fingerprint is recorded.

    Honest members must keep running, never record ``caught_up`` to this adapter (its
    fingerprint never appears in their round log, their checkpoints are not it), never
    go past the federation's ``rounds``, and finish their rounds.
    """
    import functools

    from fedswarm.federation.averaging.plain import encode_update
    from fedswarm.federation.catch_up import RESPONSE_KIND, AdapterExchange
    from fedswarm.federation.link import send_before
    from fedswarm.learning.adapter_vector import flatten_state, state_fingerprint, unflatten_state
    from fedswarm.p2p.membership import HEARTBEAT_KIND, HEARTBEAT_TOPIC, Membership

    poison: dict[str, Any] = {}

    def poisoned() -> tuple[np.ndarray, str]:
        if not poison:
            trainer = hostile.daemon.trainer
            vector, manifest = flatten_state(trainer.adapter_state())
            adapter = np.full(vector.size, TAKEOVER_VALUE, dtype=np.float32)
            poison["vector"] = adapter
            poison["fingerprint"] = state_fingerprint(unflatten_state(adapter, manifest))
            hostile.save_vector("takeover-adapter", adapter)
            hostile.record("catch_up_takeover", fingerprint=poison["fingerprint"])
        return poison["vector"], poison["fingerprint"]

    real_publish = Membership.publish_now
    sent = {"count": 0}

    async def hostile_publish(self: Any, *, gossip: bool = True) -> None:
        if not hostile.active("catch_up_takeover"):
            return await real_publish(self, gossip=gossip)
        _, fingerprint = poisoned()
        bad = TAKEOVER_BAD_ROUNDS[sent["count"] % len(TAKEOVER_BAD_ROUNDS)]
        sent["count"] += 1
        for advertised in (bad, TAKEOVER_ROUND):
            doc = json.loads(self.heartbeat().encode())
            doc.update(round=advertised, adapter_fingerprint=fingerprint)
            if advertised == TAKEOVER_ROUND:
                doc["adapter_round"] = advertised - 1  # "my adapter is that of round 999998"
            if sent["count"] <= len(TAKEOVER_BAD_ROUNDS):
                hostile.record("catch_up_takeover", heartbeat_round=advertised)
            # both ways a heartbeat travels: direct messages and gossip
            await self._node.send_to_connected(HEARTBEAT_KIND, 0, json.dumps(doc).encode())
            await self._node.publish(HEARTBEAT_TOPIC, json.dumps(doc).encode())

    def hostile_on_request(self: AdapterExchange, sender: str) -> str | None:
        if not hostile.active("catch_up_takeover"):
            return real_on_request(self, sender)
        vector, fingerprint = poisoned()
        claimed = int(hostile.plan.options["takeover_round"])
        payload = encode_update(vector, float(hostile.daemon.trainer.num_train_samples))
        task = asyncio.get_running_loop().create_task(
            send_before(self._link, sender, RESPONSE_KIND, claimed, payload, None))
        self._tasks.add(task)
        task.add_done_callback(functools.partial(_discard, self._tasks))
        hostile.record("catch_up_takeover", served=sender, claimed_round=claimed,
                       fingerprint=fingerprint)
        return None

    real_on_request = AdapterExchange.on_request
    Membership.publish_now = hostile_publish  # type: ignore[method-assign]
    AdapterExchange.on_request = hostile_on_request  # type: ignore[method-assign]


def _discard(tasks: set[Any], task: Any) -> None:
    tasks.discard(task)


# -- 6. plaintext weights --------------------------------------------------------------


def plain_weights(hostile: Hostile) -> None:
    """In plaintext averaging, send each honest member one extreme weight with our vector.

    The weights go 1e300, 1e308, inf, NaN in turn (one per recipient and round), each with
    the same vector of uniform values in [-0.9, 0.9] (within the clip bound, so only the
    weight is hostile), saved as ``plain-vector.npy``. Weight 1e300 used to make the
    group's average exactly this vector; 1e308 made it inf. Honest members must refuse
    the update (the rejection names the weight), average without it, and keep finite
    adapters unrelated to this vector.
    """
    from fedswarm.federation.averaging import plain

    real_send_before = plain.send_before
    rng = np.random.default_rng(19)
    chosen: dict[str, np.ndarray] = {}
    turn = {"next": 0}

    async def hostile_send_before(link: Any, peer: str, kind: str, round: int,
                                  payload: bytes, deadline: float | None) -> int:
        if not hostile.active("plain_weights", round):
            return await real_send_before(link, peer, kind, round, payload, deadline)
        _, count = plain._HEADER.unpack_from(payload)
        if "vector" not in chosen:
            chosen["vector"] = rng.uniform(-0.9, 0.9, size=count).astype(np.float32)
            hostile.save_vector("plain-vector", chosen["vector"])
        weight = PLAIN_WEIGHTS[turn["next"] % len(PLAIN_WEIGHTS)]
        turn["next"] += 1
        hostile.record("plain_weights", peer=peer, weight=repr(weight))
        forged = plain.encode_update(chosen["vector"], weight)
        return await real_send_before(link, peer, kind, round, forged, deadline)

    plain.send_before = hostile_send_before  # type: ignore[assignment]


# -- 7. FedMKT downgrade --------------------------------------------------------------


def fedmkt_downgrade(hostile: Hostile) -> None:
    """Send each member of a FedMKT group that asked for the secure exchange a card that
    would switch it to clear: in turn, one announcing another tokenizer/public-set support
    (a made-up fingerprint), and one asking for the clear exchange.

    Either card used to switch the whole group to the clear exchange, sending every
    member's top-k predictions on the public set to everyone. Honest members must abort
    the exchange (round aborted, the note says why) and send no ``fedmkt`` knowledge in
    the clear: the attacker records every ``fedmkt`` blob it receives (none may come).
    """
    from fedswarm.daemon import service
    from fedswarm.federation.fedmkt import exchange
    from fedswarm.federation.fedmkt.cards import Card
    from fedswarm.federation.link import FEDMKT_CARD_KIND, FEDMKT_KIND

    foreign = hashlib.sha256(b"a hostile tokenizer").hexdigest()
    real_send_before = exchange.send_before
    turn = {"next": 0}

    async def hostile_send_before(link: Any, peer: str, kind: str, round: int,
                                  payload: bytes, deadline: float | None) -> int:
        if kind == FEDMKT_CARD_KIND and hostile.active("fedmkt_downgrade", round):
            own = Card.decode(payload)
            if turn["next"] % 2 == 0:
                forged, variant = Card(foreign, own.exchange), "foreign_fingerprint"
            else:
                forged, variant = Card(own.fingerprint, "clear"), "asks_clear"
            turn["next"] += 1
            hostile.record("fedmkt_downgrade", peer=peer, variant=variant)
            payload = forged.encode()
        return await real_send_before(link, peer, kind, round, payload, deadline)

    real_on_blob = service.Daemon._on_blob

    async def watching_on_blob(self: Any, header: Any, payload: bytes) -> None:
        if header.kind == FEDMKT_KIND:  # clear knowledge: what must never come
            hostile.record("fedmkt_received", sender=header.sender, at_round=header.round,
                           bytes=len(payload))
        await real_on_blob(self, header, payload)

    exchange.send_before = hostile_send_before  # type: ignore[assignment]
    service.Daemon._on_blob = watching_on_blob  # type: ignore[method-assign]


INSTALLERS: dict[str, Callable[[Hostile], None]] = {
    "no_contributor_floor": no_contributor_floor,
    "phantom_group": phantom_group,
    "padded_group": padded_group,
    "colluding_group": colluding_group,
    "share_update": share_update,
    "record_update": record_update,
    "malformed_sum": malformed_sum,
    "unbounded_result": unbounded_result,
    "inbound_flood": inbound_flood,
    "catch_up_takeover": catch_up_takeover,
    "plain_weights": plain_weights,
    "fedmkt_downgrade": fedmkt_downgrade,
}

__all__ = ["ATTACKS", "INSTALLERS", "Hostile", "Plan", "install"]
