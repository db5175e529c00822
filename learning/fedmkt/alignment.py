"""Align two tokenisations of the same text by dynamic time warping.

Two tokenizers cut the same public example into different pieces. DTW over the
canonical token strings finds a monotone path pairing own positions with peer
positions; the step cost is the normalised edit distance of the two strings (0 for
equal pieces, 1 for unrelated ones), so equal pieces attract each other and a split
word lines up with its parts.

Only a position that is paired 1:1 (own ``i`` only with peer ``j``, and ``j`` only with
``i``) carries a peer's distribution over; every many-to-one or one-to-many position
falls back to the own token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

_HEX_BYTE = re.compile(r"<0x([0-9A-F]{2})>")


def byte_key(canonical: str) -> str:
    """The token's UTF-8 bytes, one character per byte (``<0xNN>`` becomes byte NN).

    Comparing bytes rather than characters lets a lone byte-fallback piece such as
    ``<0xE6>`` sit closer to ``日`` (whose first byte it is) than to an unrelated
    character, so split characters align with their whole counterpart.
    """
    out = bytearray()
    position = 0
    for match in _HEX_BYTE.finditer(canonical):
        out += canonical[position : match.start()].encode("utf-8", errors="surrogatepass")
        out.append(int(match.group(1), 16))
        position = match.end()
    out += canonical[position:].encode("utf-8", errors="surrogatepass")
    return out.decode("latin-1")


@dataclass(frozen=True)
class TokenAlignment:
    """``own_to_peer[i]``: the peer positions DTW paired with own position ``i``."""

    own_to_peer: tuple[tuple[int, ...], ...]
    peer_to_own: tuple[tuple[int, ...], ...]

    def one_to_one(self, own_position: int) -> int | None:
        """The single peer position paired only with ``own_position``, else ``None``."""
        peers = self.own_to_peer[own_position]
        if len(peers) != 1:
            return None
        (peer_position,) = peers
        if self.peer_to_own[peer_position] != (own_position,):
            return None
        return peer_position

    def one_to_one_fraction(self) -> float:
        if not self.own_to_peer:
            return 0.0
        hits = sum(self.one_to_one(i) is not None for i in range(len(self.own_to_peer)))
        return hits / len(self.own_to_peer)


def step_costs(own: Sequence[str], peer: Sequence[str]) -> np.ndarray:
    """[len(own), len(peer)] normalised edit distances in [0, 1], over UTF-8 bytes."""
    own_keys = [byte_key(t) for t in own]
    peer_keys = [byte_key(t) for t in peer]
    return np.asarray(
        process.cdist(own_keys, peer_keys, scorer=Levenshtein.normalized_distance, dtype=np.float32)
    )


def dtw_path(cost: np.ndarray) -> list[tuple[int, int]]:
    """The minimum-cost monotone path from (0, 0) to (n-1, m-1) through ``cost``.

    Steps are diagonal, down or right; ties prefer the diagonal so that equal-length
    stretches of matching tokens pair 1:1.
    """
    n, m = cost.shape
    if n == 0 or m == 0:
        return []
    inf = float("inf")
    rows = cost.tolist()
    total = [[inf] * (m + 1) for _ in range(n + 1)]
    total[0][0] = 0.0
    for i in range(1, n + 1):
        previous, current, row = total[i - 1], total[i], rows[i - 1]
        for j in range(1, m + 1):
            best = previous[j - 1]
            if previous[j] < best:
                best = previous[j]
            if current[j - 1] < best:
                best = current[j - 1]
            current[j] = row[j - 1] + best
    path: list[tuple[int, int]] = []
    i, j = n, m
    while True:
        path.append((i - 1, j - 1))
        if i == 1 and j == 1:
            break
        diagonal = total[i - 1][j - 1]
        up = total[i - 1][j]
        left = total[i][j - 1]
        if diagonal <= up and diagonal <= left:
            i, j = i - 1, j - 1
        elif up <= left:
            i -= 1
        else:
            j -= 1
    path.reverse()
    return path


def align_tokens(own: Sequence[str], peer: Sequence[str]) -> TokenAlignment:
    """DTW-align two sequences of canonical token strings."""
    own_to_peer: list[list[int]] = [[] for _ in own]
    peer_to_own: list[list[int]] = [[] for _ in peer]
    if own and peer:
        for i, j in dtw_path(step_costs(own, peer)):
            own_to_peer[i].append(j)
            peer_to_own[j].append(i)
    return TokenAlignment(
        own_to_peer=tuple(tuple(p) for p in own_to_peer),
        peer_to_own=tuple(tuple(o) for o in peer_to_own),
    )
