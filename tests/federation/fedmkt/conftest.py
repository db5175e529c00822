"""Shared fixture for the FedMKT exchange tests: one member's exchange over a fake link."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from fedswarm.federation.fedmkt.exchange import FedMKTLearner, FedMKTOutcome, run_fedmkt_exchange
from fedswarm.federation.link import FunctionLink
from fedswarm.federation.round import RoundContext


async def _exchange(
    *, me: str, group: list[str], round: int, model: Any, tokenizer: Any, public: Any,
    section: Any, send_blob: Any, mailbox: Any, deadline: float,
    on_reject: Callable[[str, str], None], mapping_cache: Any = None, seed: int = 0,
    secure_average: Any = None,
) -> FedMKTOutcome:
    """Run ``run_fedmkt_exchange`` as member ``me``, sending through ``send_blob``."""
    ctx = RoundContext(
        me=me, round=round, members=tuple(sorted(group)), link=FunctionLink(send_blob),
        mailbox=mailbox, deadline=deadline,
        on_reject=lambda peer, kind, why: on_reject(peer, why),
    )
    learner = FedMKTLearner(model=model, tokenizer=tokenizer, public=public, section=section,
                            mapping_cache=mapping_cache, seed=seed)
    return await run_fedmkt_exchange(ctx, learner, secure_average)


@pytest.fixture
def run_exchange() -> Callable[..., Awaitable[FedMKTOutcome]]:
    return _exchange
