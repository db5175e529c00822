"""Which layers of the owner's model go where: adapters, emulated middle, or nowhere.

Offsite-tuning (Xiao et al. 2023) splits a decoder of ``total`` layers into the bottom
``bottom`` and top ``top`` layers, which members train (the *adapters*), and the middle,
which the owner keeps. Members get a lossy *emulator* of the middle: ``keep`` of its
layers, sampled uniformly and frozen. Pure Python, no torch: the config check and the
package verifier read a layout without loading a model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from fedswarm.learning.errors import OffsiteError


@dataclass(frozen=True)
class OffsiteLayout:
    """The split of a ``total``-layer decoder into adapters and an emulated middle."""

    total: int
    bottom: int
    top: int
    keep: int

    def __post_init__(self) -> None:
        if self.bottom < 1 or self.top < 1:
            raise OffsiteError(
                f"adapter layers {self.bottom},{self.top}: need at least one "
                "bottom and one top layer"
            )
        if self.bottom + self.top >= self.total:
            raise OffsiteError(
                f"adapter layers {self.bottom},{self.top} leave no middle in a "
                f"{self.total}-layer model"
            )
        if not 1 <= self.keep < self.middle:
            raise OffsiteError(
                f"keep {self.keep}: must be at least 1 and fewer than the "
                f"{self.middle} middle layers (else the emulator is the model)"
            )

    @property
    def middle(self) -> int:
        """How many layers lie between the adapters in the full model."""
        return self.total - self.bottom - self.top

    @property
    def emulator_layers(self) -> int:
        return self.bottom + self.keep + self.top

    def kept_middle(self) -> list[int]:
        """Full-model indices of the middle layers the emulator keeps (uniform stride)."""
        return [self.bottom + (i * self.middle) // self.keep for i in range(self.keep)]

    def emulator_to_full(self) -> list[int]:
        """For each emulator layer, the full-model layer it was copied from."""
        top = range(self.total - self.top, self.total)
        return [*range(self.bottom), *self.kept_middle(), *top]

    def adapter_map(self) -> dict[int, int]:
        """Emulator index → full-model index, for the trainable adapter layers only."""
        full = self.emulator_to_full()
        top_start = self.bottom + self.keep
        emulator = [*range(self.bottom), *range(top_start, top_start + self.top)]
        return {e: full[e] for e in emulator}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> OffsiteLayout:
        """Read a layout from ``offsite.json``; anything malformed is an ``OffsiteError``."""
        try:
            values = {k: data[k] for k in ("total", "bottom", "top", "keep")}
        except (KeyError, TypeError) as exc:
            raise OffsiteError(f"offsite layout: missing field {exc}") from None
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values.values()):
            raise OffsiteError("offsite layout: every field must be an integer")
        return cls(**values)


def parse_adapter_layers(text: str) -> tuple[int, int]:
    """``"B,T"`` from the command line → (bottom, top)."""
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise OffsiteError(f"--adapter-layers {text!r}: expected two counts 'BOTTOM,TOP', e.g. 2,2")
    return int(parts[0]), int(parts[1])
