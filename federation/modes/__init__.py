"""The federation modes, by the ``[federation] mode`` value that selects each.

Each entry builds that mode's ``Exchange`` from the member's parts and the mode's
settings. Adding a mode is adding a module here and one line to ``MODES``
(docs/architecture.md, "Adding a federation mode").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..exchange import Exchange, MemberParts
from .fedmkt import FedMKTDistillation
from .lora_avg import LoraAveraging, LoraAveragingSettings

__all__ = ["MODES", "FedMKTDistillation", "LoraAveraging", "LoraAveragingSettings", "make_exchange"]

MODES: dict[str, Callable[[MemberParts, Any], Exchange]] = {
    "lora_avg": LoraAveraging,
    "fedmkt": FedMKTDistillation,
}


class UnknownModeError(ValueError):
    """``[federation] mode`` names no mode in ``MODES``."""


def make_exchange(mode: str, parts: MemberParts, settings: Any) -> Exchange:
    """The ``Exchange`` for ``mode``; raises ``UnknownModeError``."""
    try:
        build = MODES[mode]
    except KeyError:
        raise UnknownModeError(
            f"unknown federation mode {mode!r}; expected one of {', '.join(MODES)}"
        ) from None
    return build(parts, settings)
