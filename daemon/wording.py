"""Small helpers for what the daemon and the CLI say to people ("1 member", "3 rounds")."""

from __future__ import annotations

__all__ = ["plural"]


def plural(count: int, word: str, many: str | None = None) -> str:
    """``"1 round"``, ``"3 rounds"``; ``many`` for irregular plurals."""
    return f"{count} {word if count == 1 else (many or word + 's')}"
