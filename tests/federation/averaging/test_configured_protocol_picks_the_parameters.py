"""``[federation] secure_aggregation`` decides which protocol's parameters a session uses."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from fedswarm.daemon.config import SECURE_AGGREGATION_CHOICES
from fedswarm.federation.averaging import secure as secure_module
from fedswarm.federation.averaging.secure import SecureAggregation
from fedswarm.federation.link import FunctionLink
from fedswarm.federation.mailbox import Mailbox
from fedswarm.federation.round import RoundContext
from fedswarm.secagg.errors import ParameterSecurityError
from fedswarm.secagg.params import PROTOCOL_NAME, PROTOCOL_V2, PROTOCOL_V3, params_for_protocol
from fedswarm.secagg.session import AggregationResult
from fedswarm.secagg.signing import Ed25519Signer

GROUP = ("peer-a", "peer-b", "peer-c")


async def _average(monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> tuple[Any, list[Any]]:
    seen: list[Any] = []

    async def fake_session(spec: Any, signer: Any, verify: Any, vector: Any, weight: Any,
                           transport: Any, params: Any, **_: Any) -> AggregationResult:
        seen.append(params)
        return AggregationResult(average=np.zeros(2, np.float32), total_weight=6.0,
                                 survivors=GROUP, dropped=(), aggregator=GROUP[0],
                                 decryptor=GROUP[1], timings={}, bytes_sent=0,
                                 bytes_received=0, error_bound=1e-4)

    monkeypatch.setattr(secure_module, "run_secure_aggregation", fake_session)
    secure = SecureAggregation(federation_id="fed", signer=Ed25519Signer.generate("peer-a"),
                               verify=lambda *_: True, executor=lambda: None,  # type: ignore
                               step_timeout_s=1.0, **kwargs)
    ctx = RoundContext(me="peer-a", round=4, members=GROUP, link=FunctionLink(None),  # type: ignore
                       mailbox=Mailbox(max_bytes_per_sender_per_round=1024),
                       deadline=time.monotonic() + 1.0, on_reject=lambda *_: None)
    result = await secure.average(ctx, np.zeros(2, np.float32), 2.0)
    return result, seen


@pytest.mark.parametrize("protocol", [PROTOCOL_V2, PROTOCOL_V3])
async def test_the_configured_protocol_runs_and_is_recorded(
    monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    result, seen = await _average(monkeypatch, protocol=protocol)
    assert seen[0].protocol == protocol == result.protocol


async def test_without_a_setting_the_daemon_default_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    result, seen = await _average(monkeypatch)
    assert seen[0].protocol == PROTOCOL_NAME == PROTOCOL_V3 == result.protocol


def test_every_configurable_protocol_has_parameters_and_nothing_else_does() -> None:
    for choice in SECURE_AGGREGATION_CHOICES:
        if choice != "none":
            params_for_protocol(choice).validate()
    with pytest.raises(ParameterSecurityError, match="bfv-mask-shamir-v3"):
        params_for_protocol("bfv-mask-shamir-v4")
