"""The classifier screen: a local sequence classifier the organisation trusts.

Any ``AutoModelForSequenceClassification`` folder works (a safety classifier, a toxicity
model, one trained in-house). Rows are scored in batches on the CPU (or the model's
device); a row is dropped when a label in ``drop_labels`` reaches the threshold.
"""

from __future__ import annotations

from pathlib import Path

import torch
from fedswarm.learning.data_files import Row
from fedswarm.learning.errors import ScreenConfigError
from fedswarm.learning.screening.classifier_files import check_classifier_dir
from fedswarm.learning.screening.row_text import row_text
from transformers import AutoModelForSequenceClassification, AutoTokenizer


class ClassifierScreen:
    """Drops rows the classifier labels with a ``drop_labels`` label."""

    name = "classifier"

    def __init__(
        self,
        folder: Path | str,
        drop_labels: list[str],
        threshold: float = 0.5,
        batch_size: int = 16,
        max_length: int = 256,
    ) -> None:
        info = check_classifier_dir(folder, drop_labels)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(info.path))
            self.model = AutoModelForSequenceClassification.from_pretrained(str(info.path))
        except (OSError, ValueError) as exc:
            raise ScreenConfigError(f"{info.path}: cannot load the classifier ({exc})") from None
        self.model.eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.drop_ids = [info.labels.index(label) for label in drop_labels]
        self.labels = info.labels
        self.threshold = threshold
        self.batch_size = batch_size
        self.max_length = max_length

    def probabilities(self, texts: list[str]) -> torch.Tensor:
        """Label probabilities, one row per text."""
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    texts[i : i + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                batch = {k: v.to(self.model.device) for k, v in batch.items()}
                out.append(torch.softmax(self.model(**batch).logits.float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros((0, len(self.labels)))

    def check(self, rows: list[Row]) -> list[str | None]:
        probs = self.probabilities([row_text(r) for r in rows])
        reasons: list[str | None] = []
        for p in probs:
            hits = [
                (float(p[i]), self.labels[i])
                for i in self.drop_ids
                if float(p[i]) >= self.threshold
            ]
            reasons.append(
                None if not hits else f"classified {max(hits)[1]!r} (p={max(hits)[0]:.2f})"
            )
        return reasons
