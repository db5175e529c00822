"""The rules screen: regular expressions, word lists, length and script limits.

Cheap and predictable: an organisation that knows the strings it never wants trained on
(a planted trigger, customer identifiers, a competitor's watermark) says so here, and the
reason in the report names the rule that matched.
"""

from __future__ import annotations

import re
import unicodedata

from fedswarm.learning.data_files import Row
from fedswarm.learning.screening.row_text import row_text
from fedswarm.learning.screening.settings import ScreenSettings, compile_pattern


def script_of(char: str) -> str:
    """The first word of the character's Unicode name (LATIN, CYRILLIC, CJK, ...)."""
    name = unicodedata.name(char, "")
    return name.split(" ", 1)[0] if name else "UNKNOWN"


class RulesScreen:
    """Drops rows that match a pattern or word, or break a length or script limit."""

    name = "rules"

    def __init__(self, settings: ScreenSettings) -> None:
        self.settings = settings
        self.patterns = [
            (p, compile_pattern(p, f"patterns[{i}]")) for i, p in enumerate(settings.patterns)
        ]
        self.words = [
            (w, re.compile(rf"(?<!\w){re.escape(w)}(?!\w)", re.IGNORECASE)) for w in settings.words
        ]

    def check(self, rows: list[Row]) -> list[str | None]:
        return [self._reason(row_text(row)) for row in rows]

    def _reason(self, text: str) -> str | None:
        s = self.settings
        if len(text) < s.min_chars:
            return f"shorter than min_chars={s.min_chars} ({len(text)} characters)"
        if s.max_chars is not None and len(text) > s.max_chars:
            return f"longer than max_chars={s.max_chars} ({len(text)} characters)"
        for source, pattern in self.patterns:
            if pattern.search(text):
                return f"matches pattern {source!r}"
        for word, pattern in self.words:
            if pattern.search(text):
                return f"contains word {word!r}"
        if s.scripts:
            letters = [c for c in text if c.isalpha()]
            if letters:
                share = sum(script_of(c) in s.scripts for c in letters) / len(letters)
                if share < s.min_script_share:
                    return (
                        f"{share:.0%} of letters in {'/'.join(s.scripts)}, below "
                        f"min_script_share={s.min_script_share:g}"
                    )
        return None
