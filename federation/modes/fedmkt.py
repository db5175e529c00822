"""``mode = "fedmkt"``: members with different models teach each other (FedMKT).

Local training is the same LoRA training as ``lora_avg``; the group then exchanges
predictions on the shared public set and each member distils from the others
(``fedmkt/exchange.py``) instead of averaging weights: models, tokenizers and adapter
shapes may all differ, so nothing is averaged and catch-up cannot adopt a neighbour's
adapter. Distillation batches replay the member's own training examples
(``[fedmkt] replay_fraction``) so the exchange does not undo local training at home.
"""

from __future__ import annotations

import asyncio
import functools

from fedswarm.learning.fedmkt import (
    PublicDataError,
    PublicDataset,
    VocabMappingCache,
    load_public_dataset,
)

from ..errors import RoundAbortedError
from ..exchange import Combined, MemberParts
from ..fedmkt.exchange import FedMKTLearner, run_fedmkt_exchange
from ..fedmkt.report import fedmkt_event, fedmkt_record
from ..fedmkt.settings import FedMKTSection
from ..round import RoundContext

#: Each round distils with its own seed, derived from the member's training seed.
_SEED_STRIDE = 100_003


class FedMKTDistillation:
    """Mutual knowledge transfer: the ``Exchange`` of ``mode = "fedmkt"``."""

    name = "fedmkt"
    adopts_neighbour_adapters = False  # peers run different models

    def __init__(self, parts: MemberParts, settings: FedMKTSection) -> None:
        self._parts = parts
        self._section = settings
        self._public: PublicDataset | None = None
        self._mapping_cache = VocabMappingCache(parts.work_dir / "vocab-maps")

    def train(self) -> float | None:
        return self._parts.trainer.train().loss

    async def combine(self, ctx: RoundContext, weight: float) -> Combined:
        trainer = self._parts.trainer
        learner = FedMKTLearner(
            model=trainer.model,
            tokenizer=trainer.tokenizer,
            public=await self._public_set(),
            section=self._section,
            mapping_cache=self._mapping_cache,
            seed=self._parts.seed * _SEED_STRIDE + ctx.round,
            replay_ids=self._replay_ids(),
        )
        secure = self._parts.secure
        secure_average = None if secure is None else functools.partial(secure.average, ctx)
        outcome = await run_fedmkt_exchange(ctx, learner, secure_average)
        return Combined(
            record=fedmkt_record(ctx.me, outcome),
            event=("fedmkt", fedmkt_event(ctx.me, ctx.round, outcome)),
        )

    def _replay_ids(self) -> list[list[int]]:
        """Own training examples' token ids, for ``[fedmkt] replay_fraction`` (none at 0)."""
        if self._section.replay_fraction <= 0.0:
            return []
        return [example.input_ids for example in self._parts.trainer.data.train]

    async def _public_set(self) -> PublicDataset:
        """The agreed public set, loaded (and its hash checked) once."""
        if self._public is None:
            section = self._section
            try:
                self._public = await asyncio.to_thread(
                    load_public_dataset, section.public_path,
                    expected_sha256=section.public_sha256,
                )
            except PublicDataError as exc:
                raise RoundAbortedError(f"[fedmkt] public set unusable: {exc}") from exc
        return self._public
