"""Read evaluation files strictly: every row valid, or the first bad one's ``file:line``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fedswarm.learning.data_files import Row, read_rows_strict
from fedswarm.learning.errors import BadRowError, DataError

PROMPT_KEYS = ("prompt", "instruction", "text")


@dataclass(frozen=True)
class EvalSet:
    """One file's rows; its name is the file's stem."""

    name: str
    path: Path
    rows: list[Row]

    @property
    def format(self) -> str:
        return self.rows[0].format


def read_eval_set(path: Path) -> EvalSet:
    return EvalSet(Path(path).stem, Path(path), read_rows_strict(Path(path)))


def read_refusal_prompts(path: Path) -> list[str]:
    """Prompts that should be refused: JSONL rows with ``prompt`` (or ``instruction``/``text``)."""
    path = Path(path)
    prompts: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadRowError(str(path), number, f"invalid JSON: {exc.msg}") from None
        key = next((k for k in PROMPT_KEYS if isinstance(obj, dict) and k in obj), None)
        if key is None or not isinstance(obj[key], str) or not obj[key].strip():
            raise BadRowError(
                str(path), number, "expected an object with a non-empty 'prompt' string"
            )
        prompts.append(obj[key])
    if not prompts:
        raise DataError(f"{path}: no prompts (the file is empty)")
    return prompts
