"""The quality screen: rows whose loss under the model is far above the rest.

Corrupted rows (shuffled tokens, binary junk decoded as text, another language) are
surprising to the model; a row's mean token loss says so without a hand-written rule.
The cut is robust to the outliers it looks for: the median plus ``mads`` median absolute
deviations (scaled to a standard deviation for normal data), so one bad member's share of
junk cannot raise its own bar.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

from fedswarm.learning.data_files import Row

MAD_TO_SD = 1.4826  # a normal distribution's MAD times this is its standard deviation


def outlier_cut(losses: list[float], mads: float) -> float:
    """The loss above which a row is an outlier."""
    median = statistics.median(losses)
    mad = statistics.median(abs(x - median) for x in losses) * MAD_TO_SD
    return median + mads * max(mad, 1e-6)


class LossOutlierScreen:
    """Drops rows whose loss is more than ``mads`` deviations above the median."""

    name = "quality"

    def __init__(self, row_losses: Callable[[list[Row]], list[float]], mads: float) -> None:
        self.row_losses = row_losses
        self.mads = mads

    def check(self, rows: list[Row]) -> list[str | None]:
        losses = self.row_losses(rows)
        finite = [x for x in losses if math.isfinite(x)]
        if len(finite) < 3:  # no median worth the name
            return [None] * len(rows)
        cut = outlier_cut(finite, self.mads)
        median = statistics.median(finite)
        return [
            None
            if not loss > cut
            else f"loss {loss:.2f} above the cut {cut:.2f} (median {median:.2f} + "
            f"{self.mads:g} MADs)"
            for loss in losses
        ]
