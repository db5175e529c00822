"""The daemon's side of the data screen: write the quarantine report, keep the counts.

The trainer screens rows when it loads them (``learning.screening``); this module appends
what it dropped to ``<state_dir>/quarantine.jsonl`` (rows already reported by an earlier
start are not repeated) and keeps the numbers ``/api/status``, ``/metrics`` and the
dashboard show.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedswarm.learning.screening.report import REPORT_FILE, QuarantineReport
from fedswarm.learning.screening.screen import ScreenResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScreenSummary:
    """This start's screening, and the report's whole history."""

    enabled: bool
    report_path: str
    rows_checked: int = 0
    rows_kept: int = 0
    dropped_by_screen: dict[str, int] = field(default_factory=dict)
    newly_reported: int = 0
    report_entries: int = 0
    # the checkpoint round whose adapter the quality screen scored rows with (None: the
    # adapter as initialised, before any round, or no quality screen)
    scored_with_round: int | None = None

    @property
    def rows_dropped(self) -> int:
        return sum(self.dropped_by_screen.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "rows_checked": self.rows_checked,
            "rows_kept": self.rows_kept,
            "rows_dropped": self.rows_dropped,
            "dropped_by_screen": dict(self.dropped_by_screen),
            "newly_reported": self.newly_reported,
            "report_entries": self.report_entries,
            "report_path": self.report_path,
            "scored_with_round": self.scored_with_round,
        }


def record_screening(
    state_dir: Path, result: ScreenResult | None, scored_with_round: int | None = None
) -> ScreenSummary:
    """Append ``result``'s dropped rows to the report; the summary for status and metrics.

    ``scored_with_round``: the checkpoint whose adapter the quality screen used, if any.
    """
    report = QuarantineReport(Path(state_dir) / REPORT_FILE)
    if result is None:
        return ScreenSummary(False, str(report.path), report_entries=len(report.entries()))
    new = report.record(result.dropped)
    if new:
        log.warning(
            "quarantine report %s: %d new rows (%d dropped this start)",
            report.path,
            new,
            len(result.dropped),
        )
    if scored_with_round is not None:
        log.info("quality screen scored rows with the adapter of round %d", scored_with_round)
    return ScreenSummary(
        True,
        str(report.path),
        result.checked,
        len(result.kept),
        result.counts(),
        new,
        len(report.entries()),
        scored_with_round,
    )
