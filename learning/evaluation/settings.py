"""The ``[eval]`` table: sets the daemon scores after each round (docs/safety.md).

``fedswarm eval`` scores an adapter on demand; with ``[eval]`` the round loop runs the same
scoring (``evaluation.run``) on the round's model, so the dashboard's training page shows
more than eval loss as the federation learns. Plain data, no torch: ``config check`` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RoundEvalSettings:
    """Sets scored every ``every_rounds`` rounds, each capped at ``max_rows`` rows.

    ``sets`` are JSONL files of text, instruction or chat rows (loss and perplexity; exact
    match and Rouge-L for instruction rows); ``refusal`` are prompts that should be refused
    (the refusal rate). The cap bounds the cost: every instruction row and refusal prompt
    is a greedy generation of ``max_new_tokens`` tokens, in the worker thread, each round.
    """

    sets: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    every_rounds: int = 1
    max_rows: int = 32
    max_new_tokens: int = 32

    def __post_init__(self) -> None:
        if self.every_rounds < 1:
            raise ValueError("every_rounds: must be >= 1")
        if self.max_rows < 1:
            raise ValueError("max_rows: must be >= 1")
        if not 1 <= self.max_new_tokens <= 512:
            raise ValueError("max_new_tokens: must be in [1, 512]")

    @property
    def enabled(self) -> bool:
        return bool(self.sets or self.refusal)

    def due(self, round: int) -> bool:
        """Whether round ``round`` (from 1) is one the sets are scored after."""
        return self.enabled and round % self.every_rounds == 0
