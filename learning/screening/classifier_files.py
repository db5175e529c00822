"""Check a classifier folder without loading it: config check must not import torch.

What ``AutoModelForSequenceClassification.from_pretrained`` would refuse later, or what
would make the screen meaningless, is refused here in one line: no folder, no readable
``config.json``, an architecture that is not a sequence classifier, no weights, or a
``drop_labels`` entry the classifier cannot output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fedswarm.learning.errors import ScreenConfigError

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


@dataclass(frozen=True)
class ClassifierInfo:
    """What the folder's ``config.json`` says: architecture and label names by id."""

    path: Path
    architecture: str
    labels: tuple[str, ...]


def check_classifier_dir(path: Path | str, drop_labels: list[str]) -> ClassifierInfo:
    """``ClassifierInfo`` of ``path``; ``ScreenConfigError`` naming the first problem."""
    folder = Path(path)
    if not folder.is_dir():
        raise ScreenConfigError(f"{folder}: not a folder")
    config_file = folder / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScreenConfigError(
            f"{folder}: no config.json (not a Hugging Face model folder)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ScreenConfigError(f"{config_file}: unreadable ({exc})") from None
    if not isinstance(config, dict):
        raise ScreenConfigError(f"{config_file}: expected a JSON object")
    architectures = config.get("architectures") or []
    architecture = next(
        (
            a
            for a in architectures
            if isinstance(a, str) and a.endswith("ForSequenceClassification")
        ),
        None,
    )
    if architecture is None:
        raise ScreenConfigError(
            f"{folder}: not a sequence classifier (architectures {architectures!r}; expected "
            "one ending in ForSequenceClassification)"
        )
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise ScreenConfigError(f"{folder}: no weights ({' or '.join(WEIGHT_FILES[::2])})")
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        raise ScreenConfigError(f"{config_file}: no id2label map (the labels drop_labels names)")
    try:
        labels = tuple(str(id2label[k]) for k in sorted(id2label, key=int))
    except ValueError:
        raise ScreenConfigError(f"{config_file}: id2label keys must be label ids") from None
    unknown = [label for label in drop_labels if label not in labels]
    if unknown:
        raise ScreenConfigError(
            f"drop_labels: {unknown[0]!r} is not a label of {folder} (labels: {', '.join(labels)})"
        )
    return ClassifierInfo(folder, architecture, labels)
