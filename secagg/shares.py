"""The Shamir shares a member holds for others, and the rule that protects them.

The one rule that makes dropouts safe: for any peer, reveal the share of its self-mask
seed (peer survived) or of its mask private key (peer dropped), never both.  Both
together would let the decryptor strip every mask from that peer's ciphertext.
"""

from __future__ import annotations

from collections.abc import Collection

from fedswarm.secagg.errors import ShareRevealRefusedError
from fedswarm.secagg.payloads import MASK_KEY_SHARE, SEED_SHARE, RevealedShare, ShareBundle


class ShareVault:
    """Shares received in the SHARES step, released at most one kind per owner."""

    def __init__(self) -> None:
        self._bundles: dict[str, ShareBundle] = {}
        self._revealed: dict[str, int] = {}

    def store(self, owner: str, bundle: ShareBundle) -> None:
        self._bundles[owner] = bundle

    @property
    def owners(self) -> frozenset[str]:
        return frozenset(self._bundles)

    def reveal(
        self, survivors: Collection[str], dropped: Collection[str]
    ) -> tuple[RevealedShare, ...]:
        """Seed shares for survivors, mask-key shares for dropped peers; all or nothing.

        Raises ShareRevealRefusedError, revealing nothing, if a peer is in both sets or
        if an earlier reveal already released the other kind for a peer.
        """
        both = set(survivors) & set(dropped)
        if both:
            raise ShareRevealRefusedError(f"asked for both secrets of {sorted(both)}")
        wanted = [(p, SEED_SHARE) for p in survivors] + [(p, MASK_KEY_SHARE) for p in dropped]
        for owner, kind in wanted:
            previous = self._revealed.get(owner)
            if previous is not None and previous != kind:
                raise ShareRevealRefusedError(f"already revealed the other secret of {owner!r}")
        out = []
        for owner, kind in wanted:
            bundle = self._bundles.get(owner)
            if bundle is None:
                continue
            self._revealed[owner] = kind
            share = bundle.seed_share if kind == SEED_SHARE else bundle.mask_key_share
            out.append(RevealedShare(owner, kind, share))
        return tuple(out)
