"""A hostile roster member against honest real daemons (issue #19's suite).

The attacker is a real ``fedswarm run`` daemon with a valid roster identity whose code
is modified (``hostile_member/attacks.py``, started by ``hostile_member/launch.py``);
the honest members are unmodified daemons. One secure-aggregation federation runs
several attacks one after another, one per round, so the honest members' recovery is
visible in the rounds that follow:

==========  =====================  =====================================================
round       attack                 the attacker's role
==========  =====================  =====================================================
1           phantom third member   leader and decryptor of itself + victim + made-up peer
2           padded group           leader and decryptor of itself + victim + an up member
                                   it never invites
3           unbounded result       ordinary member (neither A nor D)
4           inbound flood          ordinary member; the victim is A
5           malformed SUM          aggregator A
6..9        catch-up takeover      heartbeats at round 999999 / 2**63 / -3 / "garbage",
                                   a 0.5-everywhere adapter to whoever asks
==========  =====================  =====================================================

The attacker's key is chosen (like a real attacker would, by generating keys until one
fits) so its peer id sorts lowest and the roles above fall on it. The order matters:
the attacks whose rounds end at the same time for everyone come first; after the
malformed SUM, D ends its round at once while the others wait for its result, so the
members drift apart by a round or so (and may legitimately catch up from each other).
The attacker records the round and group of each attack it ran, and the tests read the
honest members' records of that round. A plaintext federation runs the extreme-weight
attack, a FedMKT one the downgrade cards. The split view by A and D together is at the
secure-aggregation session level (``tests/secagg/test_split_view_by_colluding_a_and_d.py``):
it needs six daemons in one group, more than this suite's CI budget. Two colluders
shrinking a victim's group to themselves run in a federation of five of their own
(the contributor floor stops them; docs/reliability.md).

Every test judges by what honest daemons report (round log, ``/api/traffic``,
``/api/security``, their log) and by what the attacker obtained (its loot file).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedswarm.daemon.demo.local_federation import LocalFederation, PeerProcess
from fedswarm.secagg.params import SecAggParams

from tests.reliability.hostile_member.harness import (
    CheckpointKeeper,
    HostilePlan,
    PeerReport,
    correlation,
    give_identity,
    keep_out_of_the_lowest_ids,
    load_adapter,
    make_hostile,
    place_attacker_below,
    read_loot,
    report,
    roles_of,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

ROUNDS = 9
DEADLINE_S = 8.0
PHANTOM, PADDED, UNBOUNDED, FLOOD, MALFORMED_SUM, TAKEOVER_FROM = 1, 2, 3, 4, 5, 6
CLIP = SecAggParams().clip_norm
INBOUND_MIB = 16
FLOOD_BLOB = INBOUND_MIB * 2**20 // 4 - 2**17  # 4 of them leave 0.5 MiB; 2 leave room to invite
TAKEOVER_VALUE = 0.5


@dataclass
class SecureRun:
    """One federation's run under the round-by-round attacks, read once it is over."""

    federation: LocalFederation
    attacker: PeerProcess
    honest: list[PeerProcess]
    reports: dict[str, PeerReport]
    loot: list[dict[str, Any]]
    loot_dir: Path
    keeper: CheckpointKeeper
    members: list[str]
    wall_s: float
    exit_codes: dict[str, int | None]

    def loot_of(self, attack: str) -> list[dict[str, Any]]:
        return [entry for entry in self.loot if entry["attack"] == attack]

    def by_id(self, peer_id: str) -> PeerProcess:
        return next(p for p in self.federation.peers if p.peer_id == peer_id)


def _attacker_key_fits(candidate: str, honest: list[str]) -> bool:
    """Sorts lowest (leads every group it is in); with the victim (``honest[0]``) and one
    of the other honest members it makes a group whose roles are A = victim, D = itself
    in the padded round; it is ordinary (neither A nor D) in the unbounded and the flood
    rounds (the flood's victim is A, and an ordinary attacker's own upload is one the fair
    share refuses), and A in the malformed-SUM round."""
    if candidate >= min(honest):
        return False
    victim = honest[0]
    if not any(roles_of([candidate, victim, p], PADDED) == (victim, candidate)
               for p in honest[1:]):
        return False
    members = [candidate, *honest]
    if candidate in roles_of(members, UNBOUNDED) or candidate in roles_of(members, FLOOD):
        return False
    return roles_of(members, MALFORMED_SUM)[0] == candidate


@pytest.fixture(scope="module")
def secure_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureRun]:
    workdir = tmp_path_factory.mktemp("hostile-secure")
    federation = LocalFederation(
        workdir, peers=4, rounds=ROUNDS, group_size=4, local_steps=1, batch_size=2,
        round_deadline_s=DEADLINE_S,
        # inbound room the flood can fill: 4 declared blobs of FLOOD_BLOB fill all but
        # 0.5 MiB of it, were one peer allowed that; an upload of this model is 0.94 MiB
        overrides={"node": {"max_blob_mb": 4, "max_inbound_mb": INBOUND_MIB}},
    )
    federation.prepare()
    attacker, honest = federation.peers[0], federation.peers[1:]
    place_attacker_below(federation, attacker, honest, _attacker_key_fits)
    members = [p.peer_id for p in federation.peers]
    loot_dir = workdir / "loot"
    make_hostile(federation, attacker, HostilePlan(
        loot_dir=loot_dir,
        rounds={PHANTOM: "phantom_group", PADDED: "padded_group",
                UNBOUNDED: "unbounded_result", FLOOD: "inbound_flood",
                MALFORMED_SUM: "malformed_sum"},
        from_round={"catch_up_takeover": TAKEOVER_FROM},
        options={"phantom_victim": honest[0].peer_id, "takeover_round": ROUNDS,
                 "flood_blob_bytes": FLOOD_BLOB},
    ))
    keeper = CheckpointKeeper(honest, workdir / "kept")
    started = time.monotonic()
    codes: dict[str, int | None] = {}
    try:
        federation.start()
        federation.wait_rounds(ROUNDS, timeout_s=330, peers=honest, on_poll=keeper)
        keeper([])
        reports = {p.peer_id: report(p) for p in federation.peers}
    finally:
        codes = _stop(federation, attacker)
    wall_s = time.monotonic() - started
    for peer in honest:  # the log as it is once the daemon stopped
        reports[peer.peer_id].log = peer.log_path.read_text(errors="replace")
    print(f"secure hostile federation: {wall_s:.1f} s for {ROUNDS} rounds")
    yield SecureRun(federation, attacker, honest, reports, read_loot(loot_dir), loot_dir,
                    keeper, members, wall_s, codes)


def _stop(federation: LocalFederation, attacker: PeerProcess) -> dict[str, int | None]:
    """Kill the attacker first (it may sit in a session the honest members left, and a
    daemon gives its round 30 s after SIGTERM), then stop the honest daemons cleanly."""
    federation.kill_peer(attacker)
    return federation.stop()


def _once(run: SecureRun, attack: str, needs: str) -> dict[str, Any]:
    """The attack's one loot entry; a clear failure when it did not run (the attacker was
    not where the attack needs it: the members drifted apart before that round)."""
    entries = run.loot_of(attack)
    assert len(entries) == 1, (f"{attack} ran {len(entries)} times, not once: it needs the "
                               f"attacker to be {needs}", run.loot)
    return entries[0]


def _assert_honest_alive(run: SecureRun) -> None:
    for peer in run.honest:
        assert run.reports[peer.peer_id].running, run.federation.log_tail(peer.org)
        assert run.exit_codes[peer.org] == 0, (peer.org, run.federation.log_tail(peer.org))


# -- 2. phantom third member ------------------------------------------------------------


def _judge_padded_group(run: SecureRun, attack: str, round: int) -> dict[str, Any]:
    """What both padded-group attacks must come to: the victim reveals nothing.

    Either the attacker recovered a vector, which must be uncorrelated with the victim's
    update (|correlation| < 0.1), or it recovered nothing and the victim's round says
    why: it aborted for lack of contributors, or it never joined the padded group.
    Returns the attacker's attempt."""
    victim = run.honest[0]
    attempts = [e for e in run.loot_of(attack) if "victim_accepted" in e]
    assert len(attempts) == 1, run.loot
    (attempt,) = attempts
    assert attempt["round"] == round and attempt["victim"] == victim.peer_id, attempt
    outcome = [e for e in run.loot_of(attack) if "recovered" in e]
    recovered_files = sorted(run.loot_dir.glob(f"{attack}-r*.npy"))
    victim_round = run.reports[victim.peer_id].round(round)
    print(f"{attack}: victim accepted: {attempt['victim_accepted']}; attacker: {outcome}; "
          f"victim's round: {victim_round['status']}: {victim_round['note']}")
    if recovered_files:  # the attacker got a result: it must tell nothing of the victim
        update = run.keeper.adapter(victim, round)
        recovered = np.load(recovered_files[0])[: update.size]
        corr = correlation(recovered, update)
        print(f"{attack}: recovered a vector, correlation with the victim's update {corr:.3f}")
        assert abs(corr) < 0.1, corr
    else:
        assert not any(e["recovered"] for e in outcome), outcome
        note = str(victim_round["note"])
        if attempt["victim_accepted"]:  # it joined: the contribution floor must stop it
            assert victim_round["status"] == "aborted", victim_round
            assert "contributors" in note, note
        else:  # it never joined the padded group
            assert victim_round["status"] == "local_only", victim_round
            assert "no group" in note, note
    # the victim is back in its group once the attacker behaves (3 is refused by design)
    assert run.reports[victim.peer_id].round(FLOOD)["status"] == "complete", \
        run.reports[victim.peer_id].rounds
    _assert_honest_alive(run)
    return attempt


def test_a_phantom_padded_group_gets_the_attacker_nothing_of_the_victim(
    secure_run: SecureRun,
) -> None:
    attempt = _judge_padded_group(secure_run, "phantom_group", PHANTOM)
    assert attempt["padding"] not in secure_run.members  # a made-up peer
    for peer in secure_run.honest[1:]:  # the others were left out of the padded group
        assert secure_run.reports[peer.peer_id].round(PHANTOM)["status"] == "local_only"


def test_a_group_padded_with_an_uninvited_member_reveals_nothing_of_the_victim(
    secure_run: SecureRun,
) -> None:
    """The invitation names only members of the victim's own planned group, so plan
    matching admits it; the contribution floor is what stops the attack."""
    attempt = _judge_padded_group(secure_run, "padded_group", PADDED)
    padding = attempt["padding"]
    assert padding in {p.peer_id for p in secure_run.honest[1:]}, attempt
    # never invited, the padding member formed no group that round
    assert secure_run.reports[padding].round(PADDED)["status"] == "local_only"


# -- 4. unbounded result ----------------------------------------------------------------


def test_an_unbounded_average_is_refused_and_adapters_stay_bounded(
    secure_run: SecureRun,
) -> None:
    run = secure_run
    poisoned = _once(run, "unbounded_result", "an ordinary member of round 3's group")
    assert run.attacker.peer_id not in (poisoned["aggregator"], poisoned["decryptor"])
    round = poisoned["round"]
    group = [run.by_id(p) for p in poisoned["members"] if p != run.attacker.peer_id]
    assert len(group) >= 2, poisoned
    for peer in group:
        record = run.reports[peer.peer_id].round(round)
        print(f"unbounded: {peer.org} round {round}: {record['status']}: {record['note']}")
        assert record["status"] == "aborted", record
        assert "group average refused" in str(record["note"]), record
        adapter = run.keeper.adapter(peer, round)
        print(f"unbounded: {peer.org} max |adapter| {float(np.max(np.abs(adapter))):.3g}")
        assert np.isfinite(adapter).all()
        assert float(np.max(np.abs(adapter))) <= CLIP * 1.01, float(np.max(np.abs(adapter)))
    _assert_honest_alive(run)


# -- 8. inbound flood -------------------------------------------------------------------


def test_a_member_holding_its_inbound_share_keeps_no_other_peer_out(
    secure_run: SecureRun,
) -> None:
    run = secure_run
    entries = run.loot_of("inbound_flood")
    assert entries and not any("skipped" in e for e in entries), entries
    (formed,) = [e for e in entries if "victim_is_aggregator" in e]
    assert formed["victim_is_aggregator"], formed  # the attacker flooded the right member
    flood = [e for e in entries if "admitted" in e]
    (round,) = {e["round"] for e in flood}
    (victim_id,) = {e["victim"] for e in flood}
    held = sum(e["admitted"] for e in flood)
    assert held >= 2, flood  # the attacker did hold declared blobs on the victim
    victim = run.reports[victim_id]
    record = victim.round(round)
    group = set(record["members"] or [])
    honest_in_group = {p.peer_id for p in run.honest} & group
    print(f"flood: round {round}: attacker held {held} declared blobs of "
          f"{flood[0]['declared_bytes'] >> 20} MiB ({[e['outcomes'] for e in flood]}); "
          f"victim rejected {victim.traffic.get('rejected')}; survivors {record['survivors']}")
    assert record["status"] == "complete", record
    assert record["aggregator"] == victim_id, record
    assert honest_in_group <= set(record["survivors"]), record  # every honest upload got in
    assert len(honest_in_group) >= 3, record
    # the attacker's excess waited for room while the honest uploads were admitted, and
    # none of it got in: the victim refuses a blob that waited 15 s as "busy", and the
    # attacker's own upload, sent by the product's session, is given up once the victim
    # has left the round or after a step's wait (8 s here), whichever comes first: which
    # one ends it is timing (tests/p2p/test_inbound_limits.py checks "busy" on its own)
    assert victim.traffic["inbound_waited"] >= 2, victim.traffic
    assert run.attacker.peer_id not in record["survivors"], record
    _assert_honest_alive(run)


# -- 5. crash: malformed SUM ------------------------------------------------------------


def test_a_malformed_sum_aborts_the_decryptors_round_and_nothing_else(
    secure_run: SecureRun,
) -> None:
    run = secure_run
    sent = _once(run, "malformed_sum", "the aggregator of round 5's group")
    assert sent["chunks"] > 0 and sent["aggregator"] == run.attacker.peer_id, sent
    round, decryptor = sent["round"], sent["decryptor"]
    d = run.reports[decryptor]
    d_round = d.round(round)
    print(f"malformed SUM: decryptor's round {round}: {d_round['status']}: {d_round['note']}")
    assert d_round["status"] == "aborted", d_round
    assert "does not load or decrypt" in str(d_round["note"]), d_round
    for peer_id in sent["members"]:
        if peer_id != run.attacker.peer_id:
            assert run.reports[peer_id].round(round)["status"] == "aborted"
    # D went on: every later round it entered is finished (D ends the attacked round at
    # once, while the others wait for its result, so it may run a round or two alone, or
    # be caught up with, before the group is back together)
    later = [r for r in d.rounds if r["round"] > round]
    assert later and all(r["finished_at"] for r in later), d.rounds
    assert max(r["round"] for r in d.rounds) == ROUNDS, d.rounds
    _assert_honest_alive(run)


# -- 1. catch-up takeover --------------------------------------------------------------


def test_a_far_ahead_member_cannot_hand_out_its_adapter_through_catch_up(
    secure_run: SecureRun,
) -> None:
    run = secure_run
    takeover = run.loot_of("catch_up_takeover")
    poison_fingerprint = next(e["fingerprint"] for e in takeover if "fingerprint" in e)
    advertised = {e["heartbeat_round"] for e in takeover if "heartbeat_round" in e}
    assert {999_999, 2**63, -3, "garbage"} <= advertised, advertised
    served = [e for e in takeover if "served" in e]
    print(f"takeover: {len(served)} adapter requests answered with the poisoned adapter")
    attacker = run.attacker.peer_id
    advertising_since = min(e["at"] for e in takeover if e.get("heartbeat_round") == 999_999)
    for peer in run.honest:
        rep = run.reports[peer.peer_id]
        # the attack had its chance: once the far-ahead heartbeats were out, the member
        # checked for catch-up before a round short of the last (or caught up)
        assert any((r["round"] < ROUNDS or r["status"] == "caught_up")
                   and r["started_at"] > advertising_since
                   for r in rep.rounds), (advertising_since, rep.rounds)
        numbers = [r["round"] for r in rep.rounds]
        print(f"takeover: {peer.org}: {[(r['round'], r['status']) for r in rep.rounds]}")
        assert max(numbers) <= ROUNDS, numbers
        from_attacker = [r for r in rep.rounds
                         if r["status"] == "caught_up" and attacker in str(r["note"])]
        assert not from_attacker, from_attacker
        assert poison_fingerprint not in {r["adapter_fingerprint"] for r in rep.rounds}
        final = load_adapter(run.keeper.kept[(peer.org, max(numbers))])
        near_poison = float(np.mean(np.abs(final - TAKEOVER_VALUE) < 1e-3))
        print(f"takeover: {peer.org} final adapter: {near_poison:.2%} of values within 1e-3 "
              f"of {TAKEOVER_VALUE}, max |value| {float(np.max(np.abs(final))):.3g}")
        assert near_poison < 0.01, near_poison
        assert any(r["status"] == "complete" for r in rep.rounds
                   if r["round"] >= TAKEOVER_FROM), rep.rounds
        # heartbeats with rounds the wire cannot carry are refused, and say so
        assert "must be an integer in 0.." in rep.log, "no heartbeat refusal logged"
    _assert_honest_alive(run)


# -- 6. plaintext weights --------------------------------------------------------------


def test_extreme_plaintext_weights_are_refused_and_adapters_stay_honest(
    tmp_path: Path,
) -> None:
    """Weights 1e300, 1e308, inf and NaN with a vector of the attacker's choice, in a
    federation without secure aggregation (``secure_aggregation = "none"``)."""
    # Three rounds, though the four weights fit in two rounds' six sends: an attacker
    # whose first round ran late joins only from round 2 (seen under load), and three
    # sends cannot carry four weights.
    rounds = 3
    federation = LocalFederation(
        tmp_path, peers=4, rounds=rounds, group_size=4, local_steps=1, batch_size=2,
        round_deadline_s=DEADLINE_S, secure_aggregation="none",
    )
    federation.prepare()
    attacker, honest = federation.peers[0], federation.peers[1:]
    loot_dir = tmp_path / "loot"
    make_hostile(federation, attacker, HostilePlan(
        loot_dir=loot_dir, from_round={"plain_weights": 1}))
    started = time.monotonic()
    try:
        federation.start()
        federation.wait_rounds(rounds, timeout_s=240, peers=honest)
        reports = {p.peer_id: report(p) for p in honest}
        finals = {p.peer_id: load_adapter_of_latest(p) for p in honest}
    finally:
        codes = _stop(federation, attacker)
    print(f"plain hostile federation: {time.monotonic() - started:.1f} s for {rounds} rounds")
    sent = read_loot(loot_dir)
    assert {e["weight"] for e in sent} == {"1e+300", "1e+308", "inf", "nan"}, sent
    vector = np.load(loot_dir / "plain-vector.npy")
    for peer in honest:
        rep = reports[peer.peer_id]
        reasons = rep.rejected_reasons()
        weights_to_peer = [e["weight"] for e in sent if e["peer"] == peer.peer_id]
        assert len(weights_to_peer) >= rounds - 1, sent
        for n in range(1, rounds + 1):
            record = rep.round(n)
            assert record["status"] == "complete", record
            assert attacker.peer_id not in record["survivors"], record
            assert len(record["survivors"]) == 3, record
        assert "above max_weight" in reasons or "not a positive number" in reasons, reasons
        final = finals[peer.peer_id]
        corr = correlation(final, vector[: final.size])
        print(f"plain weights: {peer.org} refused {weights_to_peer}; final adapter max "
              f"{float(np.max(np.abs(final))):.3g}, correlation with the attacker's {corr:.3f}")
        assert np.isfinite(final).all()
        assert abs(corr) < 0.1, corr
        assert float(np.max(np.abs(final - vector[: final.size]))) > 0.5
        assert codes[peer.org] == 0, federation.log_tail(peer.org)


def load_adapter_of_latest(peer: PeerProcess) -> np.ndarray:
    from fedswarm.learning.checkpoint_files import latest_dir

    return load_adapter(latest_dir(peer.state_dir / "checkpoint"))


# -- 7. FedMKT downgrade ---------------------------------------------------------------


def test_a_hostile_fedmkt_card_never_downgrades_a_secure_exchange_to_clear(
    tmp_path: Path,
) -> None:
    """Every member runs the same model and asks for the secure exchange; the attacker's
    card announces another fingerprint to some members and asks for clear to the others."""
    federation = LocalFederation(  # a group of three: the attacker and two honest members
        tmp_path, peers=3, rounds=1, group_size=4, local_steps=1, batch_size=2,
        round_deadline_s=DEADLINE_S, mode="fedmkt",
        overrides={"fedmkt": {"homogeneous_exchange": "secure", "distill_steps": 1}},
    )
    federation.prepare()
    for peer in federation.peers:  # one model for all: the secure exchange is what they ask
        _set_model(peer, federation.model_dir)
    attacker, honest = federation.peers[0], federation.peers[1:]
    loot_dir = tmp_path / "loot"
    make_hostile(federation, attacker, HostilePlan(
        loot_dir=loot_dir, rounds={1: "fedmkt_downgrade"}))
    started = time.monotonic()
    try:
        federation.start()
        federation.wait_rounds(1, timeout_s=240, peers=honest)
        reports = {p.peer_id: report(p) for p in honest}
    finally:
        codes = _stop(federation, attacker)
    print(f"fedmkt hostile federation: {time.monotonic() - started:.1f} s for 1 round")
    loot = read_loot(loot_dir)
    variants = {e["peer"]: e["variant"] for e in loot if e["attack"] == "fedmkt_downgrade"}
    assert set(variants) == {p.peer_id for p in honest}, loot
    assert set(variants.values()) == {"foreign_fingerprint", "asks_clear"}, variants
    received = [e for e in loot if e["attack"] == "fedmkt_received"]
    assert not received, received  # no honest member sent its predictions in the clear
    for peer in honest:
        record = reports[peer.peer_id].round(1)
        print(f"fedmkt: {peer.org} got a {variants[peer.peer_id]} card: {record['status']}: "
              f"{record['note']}")
        assert record["status"] == "aborted", record
        assert "never falls back to clear" in str(record["note"]), record
        assert codes[peer.org] == 0, federation.log_tail(peer.org)


def _set_model(peer: PeerProcess, model_dir: Path) -> None:
    import tomllib

    import tomli_w

    document = tomllib.loads(peer.config_path.read_text())
    document["model"]["path"] = str(model_dir)
    peer.config_path.write_text(tomli_w.dumps(document))


# -- two colluders shrink the victim's group ---------------------------------------------


def test_two_colluders_cannot_shrink_the_victims_group_to_themselves(tmp_path: Path) -> None:
    """Five members plan one group. The leader (hostile) invites only itself, a colluder
    and the victim; the colluder joins and hands its update over out of band. Three
    contributors pass every check, and the average with two known updates gives the third
    away, so the victim must not end up in that group (or the attacker's recovered vector
    must tell nothing of its update)."""
    federation = LocalFederation(
        tmp_path, peers=5, rounds=1, group_size=4, local_steps=1, batch_size=2,
        round_deadline_s=DEADLINE_S,
    )
    federation.prepare()
    attacker, colluder, victim, *others = federation.peers
    keep_out_of_the_lowest_ids(federation, federation.peers[1:])
    give_identity(federation, attacker,
                  lambda pid: pid < min(p.peer_id for p in federation.peers[1:]))
    loot_dir = tmp_path / "loot"
    make_hostile(federation, attacker, HostilePlan(
        loot_dir=loot_dir, rounds={1: "colluding_group"},
        options={"phantom_victim": victim.peer_id, "colluder": colluder.peer_id}))
    make_hostile(federation, colluder, HostilePlan(loot_dir=loot_dir,
                                                   rounds={1: "share_update"}))
    witness_dir = tmp_path / "victim-witness"  # the victim only records its own update
    make_hostile(federation, victim, HostilePlan(loot_dir=witness_dir,
                                                 rounds={1: "record_update"}))
    try:
        federation.start()
        federation.wait_rounds(1, timeout_s=240, peers=[victim, *others])
        rep = report(victim)
    finally:
        federation.kill_peer(colluder)
        codes = _stop(federation, attacker)
    loot = read_loot(loot_dir)
    record = rep.round(1)
    print(f"colluders: victim's round 1: {record['status']} {record['members']}: "
          f"{record['note']}; attacker: {[e for e in loot if 'recovered' in e]}")
    recovered_files = sorted(loot_dir.glob("colluding_group-r*.npy"))
    if recovered_files:
        own = np.load(witness_dir / "own-input-r1.npy")
        recovered = np.load(recovered_files[0])
        corr = correlation(recovered, own)
        print(f"colluders: recovered the victim's update: correlation {corr:.6f}, "
              f"max |difference| {float(np.max(np.abs(recovered - own))):.3g}")
        assert abs(corr) < 0.1, corr
    else:
        assert set(record["members"] or []) != {attacker.peer_id, colluder.peer_id,
                                                 victim.peer_id}, record
    assert codes[victim.org] == 0
