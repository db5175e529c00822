"""Pairwise and self masks: ChaCha20 keystreams mapped to uniform values mod p.

Pairwise masks cancel in the sum (+ for the lower peer id, - for the higher), so the
aggregator and decryptor only ever see uniformly random-looking vectors per member.  The
self mask protects a member whose pairwise masks get reconstructed because someone
else thought it had dropped (Bonawitz et al., CCS 2017).
"""

from __future__ import annotations

import hashlib

import nacl.bindings
import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

_ZERO_NONCE = bytes(16)  # every key is used for one keystream only, so a fixed nonce is safe


def derive_mask_key(secret: bytes, binding: bytes, purpose: bytes) -> bytes:
    """A 32-byte ChaCha20 key from the full secret, bound to this round and purpose.

    The whole 32-byte X25519 shared secret (or self-mask seed) goes in; BLAKE2b binds it
    to the federation, group, round and context so one key never masks two rounds.
    """
    if len(secret) != 32:
        raise ValueError("mask secrets are 32 bytes")
    return hashlib.blake2b(
        secret + binding, digest_size=32, person=b"fedswarm-mask-v1", salt=purpose[:16]
    ).digest()


def keystream_mask(key: bytes, length: int, modulus: int) -> np.ndarray:
    """length values uniform mod modulus (int64) from a ChaCha20 keystream.

    Each value is a 64-bit keystream word reduced mod p; the bias is below p / 2**64,
    about 2**-34 for a 30-bit p.
    """
    encryptor = Cipher(algorithms.ChaCha20(key, _ZERO_NONCE), mode=None).encryptor()
    stream = encryptor.update(bytes(8 * length))
    words = np.frombuffer(stream, dtype="<u8")
    return (words % np.uint64(modulus)).astype(np.int64)


def pairwise_secret(my_private_key: bytes, their_public_key: bytes) -> bytes:
    """The X25519 shared secret between two members' mask keys."""
    return nacl.bindings.crypto_scalarmult(my_private_key, their_public_key)


def public_key_of(private_key: bytes) -> bytes:
    """The X25519 public key of a private key (used to check reconstructed keys)."""
    return nacl.bindings.crypto_scalarmult_base(private_key)


def pairwise_sign(me: str, other: str) -> int:
    """+1 when me sorts before other, -1 otherwise: the two masks cancel in the sum."""
    if me == other:
        raise ValueError("no pairwise mask with oneself")
    return 1 if me < other else -1


def apply_mask(values: np.ndarray, key: bytes, sign: int, modulus: int) -> None:
    """values <- values + sign * PRG(key) mod p, in place."""
    mask = keystream_mask(key, values.size, modulus)
    if sign >= 0:
        values += mask
    else:
        values -= mask
    np.remainder(values, modulus, out=values)


def apply_masks(values: np.ndarray, masks: list[tuple[bytes, int]], modulus: int) -> None:
    """Add several signed masks with one final reduction (each term is < p < 2**31)."""
    for key, sign in masks:
        mask = keystream_mask(key, values.size, modulus)
        if sign >= 0:
            values += mask
        else:
            values -= mask
    np.remainder(values, modulus, out=values)


def self_mask_commitment(seed: bytes, binding: bytes) -> bytes:
    """Hash commitment to a 32-byte random seed (hiding because the seed is random)."""
    return hashlib.sha256(b"fedswarm-selfmask-commit-v1" + binding + seed).digest()
