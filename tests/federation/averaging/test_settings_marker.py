"""lora_avg's levers change what the averaged vector means: a member with other settings
makes the round abort, even when its vector has the same length as ours.

The dangerous case is real: with square layers, frozen-A LoRA with AdamW's exp_avg
(B + exp_avg of B) is exactly as long as full LoRA without (A + B).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from fedswarm.federation.averaging.agreement import (
    MARKER_RANGE,
    MARKER_SIZE,
    settings_marker,
    strip_marker,
    with_marker,
)
from fedswarm.federation.averaging.plain import plain_group_average
from fedswarm.federation.errors import RoundAbortedError, SettingsMismatchError
from fedswarm.federation.link import FunctionLink
from fedswarm.federation.modes.lora_avg import LoraAveragingSettings
from fedswarm.federation.round import RoundContext

from bench.quality_transport import MailboxNetwork

SIZE = 32
FROZEN = LoraAveragingSettings(average_optimizer_state=True, freeze_lora_a=True)
MOMENTUM = LoraAveragingSettings(group_momentum=0.5)


async def _average(settings: dict[str, LoraAveragingSettings]) -> dict[str, np.ndarray]:
    members = sorted(settings)
    network = MailboxNetwork(members)
    network.advance(1)
    deadline = time.monotonic() + 5.0

    async def member(me: str, value: float) -> np.ndarray:
        ctx = RoundContext(
            me=me, round=1, members=tuple(members), link=FunctionLink(network.sender(me)),
            mailbox=network.mailboxes[me], deadline=deadline, on_reject=lambda *_: None)
        vector = with_marker(np.full(SIZE, value, np.float32), settings[me].describe())
        return (await plain_group_average(ctx, vector, 1.0)).average

    out = await asyncio.gather(*(member(m, 0.1 * i) for i, m in enumerate(members)))
    return dict(zip(members, out, strict=True))


async def test_members_that_agree_get_the_average_back_without_the_marker() -> None:
    averages = await _average({"a": FROZEN, "b": FROZEN, "c": FROZEN})
    stripped = strip_marker(averages["a"], FROZEN.describe())
    assert stripped.shape == (SIZE,)
    assert np.allclose(stripped, 0.1, atol=1e-6)


async def test_one_member_with_other_settings_of_equal_length_aborts_the_round() -> None:
    averages = await _average({"a": FROZEN, "b": FROZEN, "c": MOMENTUM})
    for me, settings in (("a", FROZEN), ("c", MOMENTUM)):
        with pytest.raises(SettingsMismatchError, match=r"disagree on \[federation\]") as caught:
            strip_marker(averages[me], settings.describe())
        assert isinstance(caught.value, RoundAbortedError)  # the runner keeps its own model


def test_the_marker_depends_on_every_lever_and_fits_the_clip() -> None:
    markers = {s.describe(): settings_marker(s.describe()) for s in (
        LoraAveragingSettings(), FROZEN, MOMENTUM, LoraAveragingSettings(group_momentum=0.9),
        LoraAveragingSettings(average_optimizer_state=False, freeze_lora_a=True))}
    assert len({m.tobytes() for m in markers.values()}) == len(markers)
    assert all(m.shape == (MARKER_SIZE,) and np.all(np.abs(m) <= MARKER_RANGE)
               for m in markers.values())


def test_only_a_lever_adds_the_marker() -> None:
    # Members with the defaults still average with members of earlier versions.
    assert not LoraAveragingSettings().needs_marker
    assert FROZEN.needs_marker and MOMENTUM.needs_marker
    with pytest.raises(ValueError, match="group_momentum"):
        LoraAveragingSettings(group_momentum=1.0)


def test_a_secure_average_passes_within_its_error_bound_and_a_dissenter_does_not() -> None:
    """Secure aggregation's grid moves the marker by up to its stated error bound
    (protocol v3 at k = 8: 2.5e-4 over the clip's range, an eighth of that for an
    adapter within 1/8); that must not read as disagreement, while a member of weight
    share 1/8 with other settings still does."""
    ours, theirs = settings_marker(FROZEN.describe()), settings_marker(MOMENTUM.describe())
    bound = 2.5e-4 / 8  # v3, k = 8, every member's values within 1/8 (range shift 3)
    on_grid = with_marker(np.zeros(SIZE, np.float32), FROZEN.describe())
    on_grid[-MARKER_SIZE:] += np.float32(bound) * np.array([1, -1, 1, -1], np.float32)
    assert strip_marker(on_grid, FROZEN.describe(), error_bound=bound).shape == (SIZE,)
    with pytest.raises(SettingsMismatchError):
        strip_marker(on_grid, FROZEN.describe())  # exact averaging allows no such error
    mixed = np.concatenate([np.zeros(SIZE, np.float32), (7 * ours + theirs) / 8])
    with pytest.raises(SettingsMismatchError):
        strip_marker(mixed, FROZEN.describe(), error_bound=bound)
