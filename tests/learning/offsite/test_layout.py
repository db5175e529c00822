"""Which layers become adapters and which the emulator keeps (no torch involved)."""

from __future__ import annotations

import pytest
from fedswarm.learning.offsite import OffsiteError, OffsiteLayout, parse_adapter_layers


def test_every_other_middle_layer_is_kept_and_adapters_map_to_the_full_model() -> None:
    layout = OffsiteLayout(total=8, bottom=2, top=2, keep=2)
    assert layout.kept_middle() == [2, 4]
    assert layout.emulator_to_full() == [0, 1, 2, 4, 6, 7]
    assert layout.adapter_map() == {0: 0, 1: 1, 4: 6, 5: 7}


def test_uneven_keep_spreads_over_the_middle() -> None:
    assert OffsiteLayout(total=12, bottom=1, top=1, keep=3).kept_middle() == [1, 4, 7]


@pytest.mark.parametrize(
    ("bottom", "top", "keep"), [(0, 2, 2), (2, 0, 2), (4, 4, 1), (2, 2, 4), (2, 2, 0)]
)
def test_layouts_that_hide_nothing_or_train_nothing_are_refused(
    bottom: int, top: int, keep: int
) -> None:
    with pytest.raises(OffsiteError):
        OffsiteLayout(total=8, bottom=bottom, top=top, keep=keep)


def test_layout_json_round_trip_and_malformed_input() -> None:
    layout = OffsiteLayout(8, 2, 2, 2)
    assert OffsiteLayout.from_json(layout.to_json()) == layout
    with pytest.raises(OffsiteError, match="missing"):
        OffsiteLayout.from_json({"total": 8})
    with pytest.raises(OffsiteError, match="integer"):
        OffsiteLayout.from_json({"total": "8", "bottom": 2, "top": 2, "keep": 2})


def test_adapter_layers_argument() -> None:
    assert parse_adapter_layers("2,3") == (2, 3)
    with pytest.raises(OffsiteError, match="BOTTOM,TOP"):
        parse_adapter_layers("2")
