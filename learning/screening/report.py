"""The quarantine report: one JSON line per dropped row, kept in the state folder.

Appended, never rewritten, so it survives restarts; a restart screens the same files
again and finds the same rows, so a row already reported (same file, line, screen and
text hash) is not written twice. A changed row at the same line has a new hash and is
reported again, which is what the operator needs to know.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from fedswarm.learning.screening.screen import DroppedRow

log = logging.getLogger(__name__)

REPORT_FILE = "quarantine.jsonl"


class QuarantineReport:
    """Append-only JSONL of ``DroppedRow`` entries."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def entries(self) -> list[dict[str, Any]]:
        """Every entry written so far; a torn last line (a crash mid-write) is skipped."""
        if not self.path.is_file():
            return []
        out = []
        with self.path.open("r", encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    log.warning("%s:%d: unreadable report line skipped", self.path, number)
                    continue
                if isinstance(entry, dict):
                    out.append(entry)
        return out

    def _keys(self) -> set[tuple[str, int, str, str]]:
        return {
            (str(e.get("file")), int(e.get("line", 0)), str(e.get("screen")), str(e.get("sha256")))
            for e in self.entries()
        }

    def record(self, dropped: list[DroppedRow]) -> int:
        """Append the rows not reported before; returns how many were new."""
        known = self._keys()
        fresh = [d for d in dropped if d.key not in known]
        if not fresh:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        now = time.time()
        # One write for the lot, flushed and synced: the report is a record, not a log.
        text = "".join(
            json.dumps(
                {
                    "ts": now,
                    "file": d.path,
                    "line": d.line,
                    "screen": d.screen,
                    "reason": d.reason,
                    "sha256": d.sha256,
                    "excerpt": d.excerpt,
                },
                ensure_ascii=False,
            )
            + "\n"
            for d in fresh
        )
        with self.path.open("a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        return len(fresh)

    def counts(self) -> dict[str, int]:
        """Entries by screen name, over the report's whole history."""
        return dict(Counter(str(e.get("screen")) for e in self.entries()))
