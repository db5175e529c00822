"""Roster roles: the model owner of an offsite federation is named by the roster alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from fedswarm.p2p.errors import RosterError
from fedswarm.p2p.identity import Identity
from fedswarm.p2p.roster import MODEL_OWNER_ROLE, Member, Roster


def _members() -> tuple[Member, Member]:
    return (
        Member("bank", Identity.generate().peer_id, role=MODEL_OWNER_ROLE),
        Member("clinic", Identity.generate().peer_id),
    )


def test_the_model_owner_role_round_trips_and_is_found(tmp_path: Path) -> None:
    owner, member = _members()
    roster = Roster("fed", (owner, member))
    path = tmp_path / "roster.toml"
    roster.save(path)
    assert 'role = "model_owner"' in path.read_text()
    assert path.read_text().count("role") == 1  # the default role is not written
    loaded = Roster.load(path)
    assert loaded == roster
    assert loaded.model_owner() == owner.peer_id
    assert Roster("fed", (member,)).model_owner() is None


def test_the_role_is_part_of_the_fingerprint_but_old_rosters_keep_theirs() -> None:
    owner, member = _members()
    as_member = Member(owner.org, owner.peer_id)
    with_role = Roster("fed", (owner, member))
    without = Roster("fed", (as_member, member))
    # A member who was told someone else owns the model sees a different roster.
    assert with_role.fingerprint() != without.fingerprint()
    # A roster without roles hashes as before roles existed: [org, peer id, addrs].
    import hashlib
    import json

    canonical = {
        "federation_id": "fed",
        "members": [
            [m.org, m.peer_id, []] for m in sorted((as_member, member), key=lambda m: m.peer_id)
        ],
    }
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    assert without.fingerprint() == hashlib.sha256(blob).hexdigest()


def test_unknown_roles_and_two_owners_are_refused(tmp_path: Path) -> None:
    owner, member = _members()
    path = tmp_path / "roster.toml"
    path.write_text(
        f'federation_id = "f"\n[[members]]\norg = "a"\npeer_id = "{member.peer_id}"\n'
        'role = "admin"\n'
    )
    with pytest.raises(RosterError, match=r"members\[0\]: key 'role': unknown role 'admin'"):
        Roster.load(path)
    with pytest.raises(RosterError, match="a second model_owner"):
        Roster("f", (owner, Member("clinic", member.peer_id, role=MODEL_OWNER_ROLE)))
