"""The round loop's evaluation: ``fedswarm eval``'s scoring on capped sets, as table rows.

The files are read strictly once, when the daemon starts (``config check`` reads them the
same way, so a bad row stops the daemon before the model loads, naming ``file:line``), and
capped at ``max_rows`` so a round's evaluation costs a bounded number of forward passes and
generations. Scoring itself is ``evaluation.run``'s, not a copy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedswarm.learning.evaluation.sets import EvalSet, read_eval_set, read_refusal_prompts
from fedswarm.learning.evaluation.settings import RoundEvalSettings

if TYPE_CHECKING:
    from fedswarm.learning.trainer import LocalTrainer


@dataclass(frozen=True)
class RoundEvalSets:
    """The capped sets and refusal prompts one daemon scores after its rounds."""

    settings: RoundEvalSettings
    sets: list[EvalSet]
    refusals: list[tuple[str, list[str]]]

    @classmethod
    def load(cls, settings: RoundEvalSettings) -> RoundEvalSets:
        """Read every file strictly (``BadRowError`` names ``file:line``), then cap it."""
        cap = settings.max_rows
        sets = [read_eval_set(Path(p)) for p in settings.sets]
        refusals = [(str(p), read_refusal_prompts(Path(p))) for p in settings.refusal]
        return cls(
            settings,
            [replace(s, rows=s.rows[:cap]) for s in sets],
            [(path, prompts[:cap]) for path, prompts in refusals],
        )

    def score(self, trainer: LocalTrainer) -> list[dict[str, Any]]:
        """One row per set and refusal file, in config order (blocking: a worker thread)."""
        from fedswarm.learning.evaluation.run import score_refusals, score_set  # torch

        tokens = self.settings.max_new_tokens
        out: list[dict[str, Any]] = []
        for eval_set in self.sets:
            s = score_set(trainer, eval_set, tokens)
            out.append(
                {
                    "name": s.name,
                    "path": s.path,
                    "kind": "set",
                    "format": s.format,
                    "rows": s.rows,
                    "loss": s.loss,
                    "perplexity": s.perplexity,
                    "exact_match": s.exact_match,
                    "rouge_l": s.rouge_l,
                    "refusal_rate": None,
                }
            )
        for path, prompts in self.refusals:
            r = score_refusals(trainer, path, prompts, tokens)
            out.append(
                {
                    "name": Path(path).stem,
                    "path": path,
                    "kind": "refusal",
                    "format": "prompt",
                    "rows": r.prompts,
                    "loss": None,
                    "perplexity": None,
                    "exact_match": None,
                    "rouge_l": None,
                    "refusal_rate": r.refusal_rate,
                }
            )
        return out
