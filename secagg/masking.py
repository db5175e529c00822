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
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms
from fedswarm.secagg.modular import reduce_mod

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


MASK_BLOCK_WORDS = 1 << 16  # 512 KiB of keystream per step: stays in L2, no page faults


def _keystream(key: bytes, offset_words: int = 0) -> CipherContext:
    """The key's one keystream, positioned offset_words 64-bit words in.

    ChaCha20's 16-byte nonce here is the 32-bit little-endian block counter and a zero
    nonce, so starting at block offset_words // 8 and skipping the rest gives exactly
    the words a stream started at 0 would produce there (up to 2**35 words).
    """
    block, skip = divmod(offset_words, 8)
    if not 0 <= block < 1 << 32:
        raise ValueError("keystream offset out of range")
    nonce = block.to_bytes(4, "little") + _ZERO_NONCE[4:]
    stream = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor()
    if skip:
        stream.update(bytes(8 * skip))
    return stream


def keystream_mask(key: bytes, length: int, modulus: int) -> np.ndarray:
    """length values uniform mod modulus (int64) from a ChaCha20 keystream.

    Each value is a 64-bit little-endian keystream word reduced mod p; the bias is below
    p / 2**64, about 2**-34 for a 30-bit p.  apply_masks produces the same values
    block by block.
    """
    out = np.zeros(length, dtype=np.int64)
    apply_masks(out, [(key, 1)], modulus)
    return out


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
    apply_masks(values, [(key, sign)], modulus)


def apply_masks(
    values: np.ndarray, masks: list[tuple[bytes, int]], modulus: int, offset_words: int = 0
) -> None:
    """values <- values + sum(sign * PRG(key)) mod p, in place, for int64 values in [0, p).

    offset_words: values[0] takes keystream word offset_words, so a vector masked in
    segments gets exactly the masks it would get in one piece.

    Works in blocks of MASK_BLOCK_WORDS with reused buffers: for a 4 M-value update one
    fresh 32 MB keystream per mask cost more in page faults than ChaCha20 and the
    reduction together.  The keystream is continuous across blocks, so the masks are
    exactly those of one long keystream per key.  Each block sums at most len(masks)
    terms below p < 2**40 before one reduction, far from int64 overflow.
    """
    if values.dtype != np.int64 or values.ndim != 1:
        raise ValueError("masks apply to a 1-D int64 vector")
    if not masks:
        return
    streams = [(_keystream(key, offset_words), sign) for key, sign in masks]
    block = min(MASK_BLOCK_WORDS, max(values.size, 1))
    zeros = memoryview(bytes(8 * block))
    raw = bytearray(8 * block)
    words = np.frombuffer(raw, dtype="<u8")
    reduced = np.empty(block, dtype=np.uint64)
    scratch = np.empty(block, dtype=np.uint64)
    scratch_signed = scratch.view(np.int64)
    for start in range(0, values.size, block):
        m = min(block, values.size - start)
        target = values[start : start + m]
        for stream, sign in streams:
            stream.update_into(zeros[: 8 * m], raw)
            part = reduced[:m]
            reduce_mod(words[:m], modulus, part, scratch[:m])
            if sign >= 0:
                target += part.view(np.int64)
            else:
                target -= part.view(np.int64)
        reduce_mod(target, modulus, target, scratch_signed[:m])


def self_mask_commitment(seed: bytes, binding: bytes) -> bytes:
    """Hash commitment to a 32-byte random seed (hiding because the seed is random)."""
    return hashlib.sha256(b"fedswarm-selfmask-commit-v1" + binding + seed).digest()
