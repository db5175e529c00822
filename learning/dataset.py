"""From data settings to train/eval examples, in one call the trainer can make."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fedswarm.learning.data_files import BadRow, Row, read_rows
from fedswarm.learning.errors import DataError
from fedswarm.learning.examples import Example, encode_supervised, encode_text, split_rows
from fedswarm.learning.settings import DataSettings
from transformers import PreTrainedTokenizerBase

if TYPE_CHECKING:
    from fedswarm.learning.screening.screen import ScreenResult


@dataclass
class PreparedData:
    """Everything training and evaluation read, plus what was skipped and why."""

    format: str
    train_rows: int
    train: list[Example]
    eval: list[Example]
    bad_rows: list[BadRow] = field(default_factory=list)
    screen: ScreenResult | None = None  # what [data.screen] dropped, when it ran


def _encode(rows: list[Row], tokenizer: PreTrainedTokenizerBase, settings: DataSettings,
            bad: list[BadRow]) -> list[Example]:
    if not rows:
        return []
    if rows[0].format == "text":
        return encode_text(rows, tokenizer, settings.max_length, settings.packing)
    examples, skipped = encode_supervised(rows, tokenizer, settings.max_length)
    bad.extend(skipped)
    return examples


def prepare_data(settings: DataSettings, tokenizer: PreTrainedTokenizerBase,
                 seed: int, screen: Callable[[list[Row]], ScreenResult] | None = None
                 ) -> PreparedData:
    """Read, validate, screen, split and tokenise; ``DataError`` if nothing trainable is left.

    ``screen`` runs on the training file's valid rows before the eval split, so a held-out
    row is screened like a trained one; a separate ``eval_path`` is not screened (it is
    never trained on).
    """
    train_path = Path(settings.train_path).expanduser()
    rows, bad = read_rows(train_path, settings.format)
    screened = None
    if screen is not None:
        screened = screen(rows)
        if not screened.kept:
            raise DataError(f"{train_path}: the data screen dropped every row "
                            f"({len(screened.dropped)}); see the quarantine report")
        rows = screened.kept
    if settings.eval_path:
        train_rows = rows
        eval_rows, eval_bad = read_rows(Path(settings.eval_path).expanduser(), rows[0].format)
        bad += eval_bad
    else:
        train_rows, eval_rows = split_rows(rows, settings.eval_fraction, seed)
    train = _encode(train_rows, tokenizer, settings, bad)
    evaluation = _encode(eval_rows, tokenizer, settings, bad)
    if not train:
        raise DataError(f"{train_path}: no trainable examples after tokenisation "
                        f"(max_length={settings.max_length}); first problem: "
                        f"{bad[0] if bad else 'none recorded'}")
    return PreparedData(rows[0].format, len(train_rows), train, evaluation, bad, screened)
