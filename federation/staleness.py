"""How many rounds a peer's adapter has gone without joining a group average.

Recorded per round so the dashboard and the round log can show peers that keep
missing their groups (stragglers, peers behind a bad link) and so the round loop can
decide when a peer should pull a fresh adapter from a neighbour instead of training on
an old one.
"""

from __future__ import annotations

from .errors import StalenessError


def staleness(current_round: int, last_aggregated_round: int | None) -> int:
    """Rounds since the peer last aggregated; 0 if it aggregated in ``current_round``.

    A peer that never aggregated counts from round 0: ``current_round + 1``.
    """
    if current_round < 0:
        raise StalenessError(f"current_round must be >= 0 (got {current_round})")
    if last_aggregated_round is None:
        return current_round + 1
    if last_aggregated_round > current_round:
        raise StalenessError(
            f"last aggregated in round {last_aggregated_round}, after the current round "
            f"{current_round}"
        )
    return current_round - last_aggregated_round
