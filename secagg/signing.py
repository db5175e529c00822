"""Signing and verification seam: the daemon supplies identities, secagg signs headers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

import nacl.exceptions
import nacl.signing


class Signer(Protocol):
    """Signs protocol headers with the member's long-term Ed25519 identity."""

    peer_id: str

    def sign(self, data: bytes) -> bytes:
        """Return a detached signature over data."""
        ...


Verifier = Callable[[str, bytes, bytes], bool]
"""(peer_id, data, signature) -> True when signature is peer_id's over data."""


class Ed25519Signer:
    """A Signer over a PyNaCl signing key (the daemon may pass its libp2p key instead)."""

    def __init__(self, peer_id: str, signing_key: nacl.signing.SigningKey) -> None:
        self.peer_id = peer_id
        self._key = signing_key

    @classmethod
    def generate(cls, peer_id: str) -> Ed25519Signer:
        """A fresh random identity, for tests and benchmarks."""
        return cls(peer_id, nacl.signing.SigningKey.generate())

    @property
    def verify_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return bytes(self._key.verify_key)

    def sign(self, data: bytes) -> bytes:
        return bytes(self._key.sign(data).signature)


def verifier_from_keys(public_keys: Mapping[str, bytes]) -> Verifier:
    """Build a Verifier from a roster of raw Ed25519 public keys; unknown peers fail."""
    keys = {peer: nacl.signing.VerifyKey(key) for peer, key in public_keys.items()}

    def verify(peer_id: str, data: bytes, signature: bytes) -> bool:
        key = keys.get(peer_id)
        if key is None:
            return False
        try:
            key.verify(data, signature)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            return False
        return True

    return verify
