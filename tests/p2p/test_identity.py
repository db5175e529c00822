"""Identity: persistence, permission refusal, peer id <-> public key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fedswarm.p2p.errors import IdentityError
from fedswarm.p2p.identity import Identity, public_key_from_peer_id, verify_signature
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID


def test_saved_identity_loads_back_with_same_peer_id(tmp_path: Path) -> None:
    ident = Identity.generate()
    path = tmp_path / "node.key"
    ident.save(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    loaded = Identity.load(path)
    assert loaded.peer_id == ident.peer_id
    assert loaded.public_key == ident.public_key


def test_key_file_readable_by_group_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    Identity.generate().save(path)
    os.chmod(path, 0o640)
    with pytest.raises(IdentityError, match="mode is 0640"):
        Identity.load(path)


def test_corrupt_key_file_raises_identity_error(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    path.write_text("fedswarm-ed25519-seed-v1 zz\n")
    os.chmod(path, 0o600)
    with pytest.raises(IdentityError, match="not valid hex"):
        Identity.load(path)
    path.write_text("hello\n")
    with pytest.raises(IdentityError, match="not a fedswarm identity file"):
        Identity.load(path)


def test_missing_key_file_raises_identity_error(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="does not exist"):
        Identity.load(tmp_path / "absent.key")


def test_peer_id_matches_libp2p_and_embeds_public_key() -> None:
    ident = Identity.generate()
    libp2p_id = ID.from_pubkey(create_new_key_pair(ident.seed).public_key).to_base58()
    assert ident.peer_id == libp2p_id
    assert ident.peer_id.startswith("12D3KooW")
    assert public_key_from_peer_id(ident.peer_id) == ident.public_key


def test_signature_verifies_only_for_signer_and_data() -> None:
    a, b = Identity.generate(), Identity.generate()
    sig = a.sign(b"payload")
    assert verify_signature(a.peer_id, b"payload", sig)
    assert not verify_signature(b.peer_id, b"payload", sig)
    assert not verify_signature(a.peer_id, b"payload!", sig)
    assert not verify_signature("not-a-peer-id", b"payload", sig)


def test_non_ed25519_peer_id_is_refused() -> None:
    with pytest.raises(IdentityError):
        public_key_from_peer_id("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N")
