"""Roster: TOML round trip, errors that name the file and key, edits."""

from __future__ import annotations

from pathlib import Path

import pytest
from fedswarm.p2p.errors import RosterError
from fedswarm.p2p.identity import Identity
from fedswarm.p2p.roster import Member, Roster


def _roster() -> Roster:
    return Roster(
        "fed-1",
        (
            Member("alpha", Identity.generate().peer_id, ("/ip4/127.0.0.1/tcp/4001",)),
            Member("beta", Identity.generate().peer_id),
        ),
    )


def test_roster_round_trips_through_toml(tmp_path: Path) -> None:
    roster = _roster()
    path = tmp_path / "roster.toml"
    roster.save(path)
    loaded = Roster.load(path)
    assert loaded == roster
    assert loaded.fingerprint() == roster.fingerprint()


def test_bad_peer_id_error_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "roster.toml"
    path.write_text('federation_id = "f"\n[[members]]\norg = "a"\npeer_id = "nope"\n')
    with pytest.raises(RosterError) as err:
        Roster.load(path)
    assert str(path) in str(err.value)
    assert "members[0]" in str(err.value) and "'peer_id'" in str(err.value)


def test_missing_federation_id_names_key(tmp_path: Path) -> None:
    path = tmp_path / "roster.toml"
    path.write_text("members = []\n")
    with pytest.raises(RosterError, match="'federation_id'"):
        Roster.load(path)


def test_unknown_key_and_invalid_toml_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "roster.toml"
    path.write_text('federation_id = "f"\nextra = 1\n')
    with pytest.raises(RosterError, match="unknown key 'extra'"):
        Roster.load(path)
    path.write_text("federation_id = \n")
    with pytest.raises(RosterError, match="not valid TOML"):
        Roster.load(path)


def test_duplicate_peer_id_is_refused() -> None:
    pid = Identity.generate().peer_id
    with pytest.raises(RosterError, match="duplicate peer id"):
        Roster("f", (Member("a", pid), Member("b", pid)))


def test_bad_multiaddr_names_addrs_key() -> None:
    with pytest.raises(RosterError, match="'addrs'"):
        Roster("f", (Member("a", Identity.generate().peer_id, ("not a multiaddr",)),))


def test_with_and_without_member_and_lookups() -> None:
    roster = _roster()
    newcomer = Member("gamma", Identity.generate().peer_id)
    grown = roster.with_member(newcomer)
    assert grown.is_member(newcomer.peer_id) and grown.org_of(newcomer.peer_id) == "gamma"
    assert not roster.is_member(newcomer.peer_id)
    shrunk = grown.without_member(newcomer.peer_id)
    assert shrunk.fingerprint() == roster.fingerprint()
    assert grown.fingerprint() != roster.fingerprint()
    assert roster.org_of("12D3KooWnotthere") is None


def test_fingerprint_ignores_member_order() -> None:
    roster = _roster()
    reordered = Roster(roster.federation_id, tuple(reversed(roster.members)))
    assert reordered.fingerprint() == roster.fingerprint()
