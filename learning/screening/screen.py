"""The ``Screen`` protocol and the one function that runs screens over rows.

A screen answers, for each row, either None (keep) or the reason it refuses the row.
Screens run in the configured order and each sees only what the ones before it kept, so
an expensive screen (a classifier, a loss pass) never reads a row a rule already refused.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from fedswarm.learning.data_files import Row
from fedswarm.learning.screening.row_text import row_text

log = logging.getLogger(__name__)


class Screen(Protocol):
    """One way of refusing rows; ``name`` is what the report and the counts call it."""

    name: str

    def check(self, rows: list[Row]) -> list[str | None]:
        """For each row, in order: None to keep it, or why it is dropped."""
        ...


@dataclass(frozen=True)
class DroppedRow:
    """One refused row: where it was, which screen refused it and why.

    ``sha256`` identifies the row's text without repeating it; ``excerpt`` is empty unless
    the operator asked for excerpts (``report_excerpt_chars``).
    """

    path: str
    line: int
    screen: str
    reason: str
    sha256: str
    excerpt: str = ""

    @property
    def key(self) -> tuple[str, int, str, str]:
        """What makes two reports of a row the same report (used to skip repeats)."""
        return (self.path, self.line, self.screen, self.sha256)


@dataclass
class ScreenResult:
    """What the screens kept and what they dropped, in row order."""

    kept: list[Row]
    dropped: list[DroppedRow] = field(default_factory=list)
    checked: int = 0

    def counts(self) -> dict[str, int]:
        """Dropped rows by screen name."""
        return dict(Counter(d.screen for d in self.dropped))


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def apply_screens(rows: list[Row], screens: list[Screen], excerpt_chars: int = 0) -> ScreenResult:
    """Run ``screens`` in order over ``rows``; every refused row becomes a ``DroppedRow``."""
    result = ScreenResult(kept=list(rows), checked=len(rows))
    for screen in screens:
        if not result.kept:
            break
        reasons = screen.check(result.kept)
        if len(reasons) != len(result.kept):
            raise RuntimeError(
                f"screen {screen.name} answered {len(reasons)} verdicts for {len(result.kept)} rows"
            )
        kept = []
        for row, reason in zip(result.kept, reasons, strict=True):
            if reason is None:
                kept.append(row)
                continue
            text = row_text(row)
            result.dropped.append(
                DroppedRow(
                    row.path, row.line, screen.name, reason, text_sha256(text), text[:excerpt_chars]
                )
            )
        result.kept = kept
    if result.dropped:
        log.warning(
            "data screen dropped %d of %d rows (%s); see the quarantine report",
            len(result.dropped),
            result.checked,
            ", ".join(f"{k}: {v}" for k, v in sorted(result.counts().items())),
        )
    return result
