"""The aggregator's upload spool as the federation sees it: where it goes, and a full disk
ending the round, never the daemon (secagg/spool.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedswarm.federation.averaging import secure as secure_module
from fedswarm.federation.averaging.secure import SecureAggregation
from fedswarm.federation.errors import RoundAbortedError
from fedswarm.federation.link import FunctionLink
from fedswarm.federation.mailbox import Mailbox
from fedswarm.federation.round import RoundContext
from fedswarm.secagg.errors import SpoolFullError
from fedswarm.secagg.session import AggregationResult
from fedswarm.secagg.signing import Ed25519Signer

GROUP = ("peer-a", "peer-b", "peer-c")


async def _average(
    monkeypatch: pytest.MonkeyPatch, spool_dir: Path | None, error: Exception | None = None
) -> tuple[Any, list[Any]]:
    seen: list[Any] = []

    async def fake_session(*_: Any, **kwargs: Any) -> AggregationResult:
        seen.append(kwargs.get("spool_dir"))
        if error is not None:
            raise error
        return AggregationResult(average=np.zeros(2, np.float32), total_weight=6.0,
                                 survivors=GROUP, dropped=(), aggregator=GROUP[0],
                                 decryptor=GROUP[1], timings={}, bytes_sent=0,
                                 bytes_received=0, error_bound=1e-4)

    monkeypatch.setattr(secure_module, "run_secure_aggregation", fake_session)
    secure = SecureAggregation(federation_id="fed", signer=Ed25519Signer.generate("peer-a"),
                               verify=lambda *_: True, executor=lambda: None,  # type: ignore
                               step_timeout_s=1.0, spool_dir=spool_dir)
    ctx = RoundContext(me="peer-a", round=4, members=GROUP, link=FunctionLink(None),  # type: ignore
                       mailbox=Mailbox(max_bytes_per_sender_per_round=1024),
                       deadline=time.monotonic() + 1.0, on_reject=lambda *_: None)
    return await secure.average(ctx, np.zeros(2, np.float32), 2.0), seen


async def test_the_configured_spool_directory_reaches_the_session(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, seen = await _average(monkeypatch, tmp_path / "spool")
    assert seen == [tmp_path / "spool"]


async def test_a_full_spool_disk_ends_the_round_as_an_abort(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    full = SpoolFullError("cannot write spool file x: the disk is full (No space left)")
    with pytest.raises(RoundAbortedError, match="disk is full"):
        await _average(monkeypatch, tmp_path / "spool", full)
