"""The federation modes, by the ``[federation] mode`` value that selects each.

Each entry builds that mode's ``Exchange`` from the member's parts and the mode's
settings. Adding a mode is adding a module here and one line to ``MODES``
(docs/architecture.md, "Adding a federation mode").

The entries import their module when called, not when this package is imported:
the config reads ``MODES`` to validate ``[federation] mode``, and ``fedswarm config
check`` must not import torch (seconds) to do that.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fedswarm.learning.lazy_exports import import_lazily

if TYPE_CHECKING:
    from ..exchange import Exchange, MemberParts
    from .fedkseed import KSeedAveraging
    from .fedmkt import FedMKTDistillation
    from .lora_avg import LoraAveraging, LoraAveragingSettings

__all__ = [
    "MODES",
    "FedMKTDistillation",
    "KSeedAveraging",
    "LoraAveraging",
    "LoraAveragingSettings",
    "make_exchange",
]


def _lora_avg(parts: MemberParts, settings: Any) -> Exchange:
    from .lora_avg import LoraAveraging

    return LoraAveraging(parts, settings)


def _fedkseed(parts: MemberParts, settings: Any) -> Exchange:
    from .fedkseed import KSeedAveraging

    return KSeedAveraging(parts, settings)
def _offsite(parts: MemberParts, settings: Any) -> Exchange:
    from .offsite import make_offsite_exchange

    return make_offsite_exchange(parts, settings)


def _fedmkt(parts: MemberParts, settings: Any) -> Exchange:
    from .fedmkt import FedMKTDistillation

    return FedMKTDistillation(parts, settings)


MODES: dict[str, Callable[[MemberParts, Any], Exchange]] = {
    "lora_avg": _lora_avg,
    "fedmkt": _fedmkt,
    "fedkseed": _fedkseed,
    "offsite": _offsite,
}

_LAZY = {
    "KSeedAveraging": "fedkseed",
    "FedMKTDistillation": "fedmkt",
    "LoraAveraging": "lora_avg",
    "LoraAveragingSettings": "lora_avg",
}


def __getattr__(name: str) -> Any:
    return import_lazily(__name__, _LAZY, globals(), name)


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
