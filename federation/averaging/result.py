"""``GroupAverage``: what a group's averaging produced, whichever protocol ran."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class GroupAverage:
    """A group's weighted average, who it covers, and how far it may be from exact.

    ``error_bound`` is the largest per-coordinate distance from the exact weighted
    average of the survivors' inputs (0 for plaintext averaging; the quantisation bound
    for secure aggregation). Callers that check a result against what honest inputs can
    produce use it instead of recomputing the protocol's grid.
    """

    average: np.ndarray
    total_weight: float
    survivors: list[str]
    dropped: list[str]
    protocol: str
    aggregator: str | None = None
    decryptor: str | None = None
    bytes_sent: int = 0
    bytes_received: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    error_bound: float = 0.0
    value_bound: float | None = None
    """The largest |coordinate| honest inputs can have, when the protocol knows one
    tighter than the clip (secure aggregation v3: ``clip / 2**range_shift``)."""
    group_noise_multiplier: float | None = None
    """With group-level DP: the effective noise multiplier of this group's sum
    (``secagg.distributed_dp.effective_noise_multiplier``)."""

    def round_record(self) -> dict[str, Any]:
        """The round log's fields for this average (``Combined.record``), one shape for
        every mode that averages a vector."""
        return {
            "survivors": self.survivors,
            "dropped": self.dropped,
            "protocol": self.protocol,
            "aggregator": self.aggregator,
            "decryptor": self.decryptor,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "aggregate_s": self.timings.get("aggregate_s"),
        }

    def carried_weight(self) -> float:
        """The push-sum weight each survivor carries into its next round."""
        return self.total_weight / len(self.survivors)
