"""Read rows from JSONL or Parquet files and sort out the bad ones.

Private data is messy. A bad row must never stop a round: it is reported with its file
and line (so the operator can fix it) and skipped. Only a file with no usable row at
all is an error, because training on nothing is never what the operator meant.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedswarm.learning.errors import BadRowError, DataError

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class BadRow:
    """A skipped row: where it is and why it was refused."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class Row:
    """A validated row in one of the three formats, with its origin for error messages."""

    format: str  # "text" | "instruction" | "chat"
    fields: dict[str, Any]
    path: str
    line: int


def _read_raw(path: Path) -> list[tuple[int, Any, str | None]]:
    """(line number, parsed object or None, parse error) for every non-blank row."""
    return list(_iter_raw(path))


def _iter_raw(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """Like ``_read_raw``, one row at a time (JSONL is streamed, not read whole)."""
    if not path.is_file():
        raise DataError(f"{path}: data file does not exist")
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise DataError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from exc
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises its own hierarchy
            raise DataError(f"{path}: not a readable Parquet file: {exc}") from exc
        yield from ((i + 1, obj, None) for i, obj in enumerate(table.to_pylist()))
        return
    try:
        with path.open("r", encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    parsed = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield number, None, f"invalid JSON: {_json_problem(exc)}"
                    continue
                yield number, parsed, None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc


def _json_problem(exc: json.JSONDecodeError) -> str:
    """The decoder's message with its column: ``exc.msg`` alone ends in a dangling "at"."""
    joiner = " column" if exc.msg.endswith(" at") else " at column"
    return f"{exc.msg}{joiner} {exc.colno}"


def describe_bad_rows(bad: list[BadRow], shown: int = 3) -> str:
    """Up to ``shown`` bad rows as "line N: reason", joined on one line, and how many more."""
    parts = [f"line {b.line}: {b.reason}" for b in bad[:shown]]
    if len(bad) > shown:
        parts.append(f"and {len(bad) - shown} more")
    return "; ".join(parts)


def _no_valid_rows(path: Path, fmt: str, bad: list[BadRow]) -> DataError:
    if not bad:
        return DataError(f"{path}: no rows to train on (the file is empty)")
    rows = "row" if len(bad) == 1 else "rows"
    return DataError(
        f"{path}: no valid {fmt} rows; {len(bad)} bad {rows}: {describe_bad_rows(bad)}"
    )


def check_has_valid_row(path: Path, fmt: str) -> str:
    """The format of ``path``'s first valid row; ``DataError`` naming the problems if none.

    Stops at the first valid row, so ``fedswarm config check`` can refuse a file that
    ``run`` would refuse (every row bad, or empty) without reading a large file whole.
    """
    chosen = "" if fmt == "auto" else fmt
    bad: list[BadRow] = []
    for number, obj, parse_error in _iter_raw(path):
        if not chosen:
            chosen = detect_format(obj) or ""
        if parse_error is None and not chosen:
            reason: str | None = "no 'text', 'instruction'/'output' or 'messages' key"
        else:
            reason = parse_error or validate_row(obj, chosen)
        if reason is None:
            return chosen
        bad.append(BadRow(str(path), number, reason))
    raise _no_valid_rows(path, chosen or "usable", bad)


def detect_format(obj: Any) -> str | None:
    """Which format a row looks like, from its keys; None if none of them."""
    if not isinstance(obj, dict):
        return None
    if "messages" in obj:
        return "chat"
    if "instruction" in obj or "output" in obj:
        return "instruction"
    if "text" in obj:
        return "text"
    return None


def validate_row(obj: Any, fmt: str) -> str | None:
    """None if ``obj`` is a valid row of ``fmt``, else the reason it is not."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    if fmt == "text":
        text = obj.get("text")
        if not isinstance(text, str) or not text.strip():
            return "'text' must be a non-empty string"
        return None
    if fmt == "instruction":
        if not isinstance(obj.get("instruction"), str) or not obj["instruction"].strip():
            return "'instruction' must be a non-empty string"
        if not isinstance(obj.get("output"), str) or not obj["output"].strip():
            return "'output' must be a non-empty string"
        if obj.get("input") is not None and not isinstance(obj["input"], str):
            return "'input' must be a string when present"
        return None
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            return f"messages[{i}].role must be one of {ROLES}"
        if not isinstance(m.get("content"), str):
            return f"messages[{i}].content must be a string"
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        return "'messages' has no non-empty assistant turn to learn from"
    return None


def held_out_count(rows: int, eval_fraction: float) -> int:
    """How many of ``rows`` training rows ``eval_fraction`` holds out (at least one, never all).

    Here, without torch, so ``fedswarm config check`` can count training examples the way
    training will (``examples.split_rows``).
    """
    if eval_fraction <= 0 or rows < 2:
        return 0
    return min(rows - 1, max(1, round(rows * eval_fraction)))


def read_rows(path: Path, fmt: str) -> tuple[list[Row], list[BadRow]]:
    """Valid rows and skipped rows of one file.

    With ``fmt="auto"`` the format is taken from the first row that looks like one; rows
    in another format are then bad rows, since mixing formats is almost always a mistake.
    Raises ``DataError`` if the file has no valid row.
    """
    raw = _read_raw(path)
    chosen = fmt
    if chosen == "auto":
        chosen = next((f for _, obj, _ in raw if (f := detect_format(obj)) is not None), "")
        if not chosen:
            raise DataError(f"{path}: no row has 'text', 'instruction'/'output' or 'messages'")
    rows: list[Row] = []
    bad: list[BadRow] = []
    for number, obj, parse_error in raw:
        reason = parse_error or validate_row(obj, chosen)
        if reason is not None:
            bad.append(BadRow(str(path), number, reason))
            log.warning("skipping bad row %s:%d: %s", path, number, reason)
            continue
        rows.append(Row(chosen, obj, str(path), number))
    if not rows:
        raise _no_valid_rows(path, chosen, bad)
    return rows, bad


def read_rows_strict(path: Path, fmt: str = "auto") -> list[Row]:
    """Every row of ``path``, or ``BadRowError`` naming ``file:line`` of the first bad one.

    For evaluation sets: a score over a silently shortened set is a different score, so
    where training skips a bad row, an evaluation refuses the file.
    """
    chosen = "" if fmt == "auto" else fmt
    rows: list[Row] = []
    for number, obj, parse_error in _iter_raw(path):
        if parse_error is not None:
            raise BadRowError(str(path), number, parse_error)
        if not chosen:
            chosen = detect_format(obj) or ""
            if not chosen:
                raise BadRowError(str(path), number,
                                  "no 'text', 'instruction'/'output' or 'messages' key")
        reason = validate_row(obj, chosen)
        if reason is not None:
            raise BadRowError(str(path), number, reason)
        rows.append(Row(chosen, obj, str(path), number))
    if not rows:
        raise DataError(f"{path}: no rows (the file is empty)")
    return rows
