"""Score the trainer's current adapter on evaluation sets.

Loss is token-weighted over the whole set (the way ``LocalTrainer.evaluate`` weighs it),
so perplexity = exp(loss) is comparable with the daemon's eval loss. Generation is greedy
and deterministic, so two adapters are compared on the same footing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from fedswarm.learning.evaluation.metrics import exact_match, is_refusal, rouge_l
from fedswarm.learning.evaluation.sets import EvalSet
from fedswarm.learning.examples import instruction_prompt

if TYPE_CHECKING:
    from fedswarm.learning.trainer import LocalTrainer


@dataclass
class SetScore:
    """One set's numbers; generation scores only for instruction sets."""

    name: str
    path: str
    format: str
    rows: int
    tokens: int
    loss: float
    perplexity: float
    exact_match: float | None = None
    rouge_l: float | None = None


@dataclass
class RefusalScore:
    path: str
    prompts: int
    refusal_rate: float


def score_set(trainer: LocalTrainer, eval_set: EvalSet, max_new_tokens: int) -> SetScore:
    examples = trainer.encode_rows(eval_set.rows)
    kept = [e for e in examples if e is not None]
    scored = trainer.example_losses(kept)
    tokens = sum(n for _, n in scored)
    loss = sum(t for t, _ in scored) / max(tokens, 1)
    result = SetScore(
        eval_set.name,
        str(eval_set.path),
        eval_set.format,
        len(eval_set.rows),
        tokens,
        loss,
        math.exp(min(loss, 50.0)),
    )
    if eval_set.format == "instruction":
        prompts = [
            instruction_prompt(r.fields["instruction"], r.fields.get("input"))
            for r in eval_set.rows
        ]
        answers = trainer.generate(prompts, max_new_tokens=max_new_tokens)
        references = [r.fields["output"] for r in eval_set.rows]
        pairs = list(zip(answers, references, strict=True))
        result.exact_match = sum(exact_match(a, r) for a, r in pairs) / len(pairs)
        result.rouge_l = sum(rouge_l(a, r) for a, r in pairs) / len(pairs)
    return result


def score_refusals(
    trainer: LocalTrainer, path: str, prompts: list[str], max_new_tokens: int
) -> RefusalScore:
    answers = trainer.generate(prompts, max_new_tokens=max_new_tokens)
    return RefusalScore(path, len(prompts), sum(map(is_refusal, answers)) / len(prompts))


def as_dict(sets: list[SetScore], refusals: list[RefusalScore]) -> dict[str, Any]:
    return {"sets": [asdict(s) for s in sets], "refusal": [asdict(r) for r in refusals]}


def table(sets: list[SetScore], refusals: list[RefusalScore]) -> str:
    def opt(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    head = f"{'set':<24} {'format':<11} {'rows':>5} {'loss':>7} {'ppl':>9} {'EM':>6} {'RougeL':>7}"
    lines = [head, "-" * len(head)]
    for s in sets:
        lines.append(
            f"{s.name[:24]:<24} {s.format:<11} {s.rows:>5} {s.loss:>7.4f} "
            f"{s.perplexity:>9.2f} {opt(s.exact_match):>6} {opt(s.rouge_l):>7}"
        )
    for r in refusals:
        lines.append(f"refusal rate {r.refusal_rate:.1%} on {r.prompts} prompts ({r.path})")
    return "\n".join(lines)
