"""Shamir secret sharing of 32-byte secrets over the prime field GF(2**521 - 1).

Why our own: the well-kept PyPI option (pycryptodome's Crypto.Protocol.SecretSharing)
works over GF(2**128) and splits only 16-byte secrets.  This is the textbook scheme over
a Mersenne prime larger than any 32-byte secret, in a few readable lines.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from fedswarm.secagg.errors import MessageFormatError, ProtocolViolationError

PRIME = 2**521 - 1
SECRET_BYTES = 32
SHARE_Y_BYTES = 66  # ceil(521 / 8)


@dataclass(frozen=True)
class Share:
    """One point (x, y) on the sharing polynomial; x is the holder's 1-based index."""

    x: int
    y: int

    def to_bytes(self) -> bytes:
        return self.x.to_bytes(2, "big") + self.y.to_bytes(SHARE_Y_BYTES, "big")

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> Share:
        if len(data) != 2 + SHARE_Y_BYTES:
            raise MessageFormatError("share has the wrong length")
        x = int.from_bytes(data[:2], "big")
        y = int.from_bytes(data[2:], "big")
        if x == 0 or y >= PRIME:
            raise MessageFormatError("share is outside the field")
        return cls(x, y)


def split_secret(secret: bytes, n: int, threshold: int) -> list[Share]:
    """n shares (x = 1..n) of secret; any threshold of them reconstruct it, fewer learn nothing."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"secret must be {SECRET_BYTES} bytes")
    if not 1 <= threshold <= n < 2**16:
        raise ValueError("need 1 <= threshold <= n < 65536")
    coefficients = [int.from_bytes(secret, "big")] + [
        secrets.randbelow(PRIME) for _ in range(threshold - 1)
    ]
    shares = []
    for x in range(1, n + 1):
        y = 0
        for c in reversed(coefficients):
            y = (y * x + c) % PRIME
        shares.append(Share(x, y))
    return shares


def reconstruct_secret(shares: Sequence[Share], threshold: int) -> bytes:
    """Lagrange-interpolate the secret at x = 0 from the first threshold distinct shares."""
    distinct: dict[int, int] = {}
    for share in shares:
        distinct.setdefault(share.x, share.y)
    if len(distinct) < threshold:
        raise ProtocolViolationError(f"need {threshold} distinct shares, have {len(distinct)}")
    points = list(distinct.items())[:threshold]
    secret = 0
    for i, (xi, yi) in enumerate(points):
        numerator, denominator = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                numerator = numerator * (-xj) % PRIME
                denominator = denominator * (xi - xj) % PRIME
        secret = (secret + yi * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 2 ** (8 * SECRET_BYTES):
        raise ProtocolViolationError("shares do not reconstruct a 32-byte secret")
    return secret.to_bytes(SECRET_BYTES, "big")


def threshold_for(group_size: int) -> int:
    """t = floor(k/2) + 1: a strict majority, so two disjoint coalitions cannot both act."""
    return group_size // 2 + 1
