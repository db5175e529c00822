"""``fedswarm eval``: score an adapter on JSONL sets beyond eval loss (docs/safety.md).

Loss and perplexity on any set; exact match and Rouge-L (the ``rouge-score`` package) on
instruction rows; the refusal rate on prompts that should be refused. Sets are read
strictly before any model loads: a bad row stops the evaluation with its ``file:line``.
"""

from __future__ import annotations

from fedswarm.learning.evaluation.metrics import exact_match, is_refusal, rouge_l
from fedswarm.learning.evaluation.sets import EvalSet, read_eval_set, read_refusal_prompts

__all__ = [
    "EvalSet",
    "exact_match",
    "is_refusal",
    "read_eval_set",
    "read_refusal_prompts",
    "rouge_l",
]
