"""Offsite-tuning (Xiao et al. 2023): members tune adapter layers on a lossy emulator.

One concept per module: ``layout`` (which layers go where; no torch), ``manifest``
(hashes; no torch), ``package`` (build and open the owner's package), ``layers`` (find
decoder layers, read adapter layers, plug them in), ``emulator`` (load it trainable),
``trainer`` (a member's training), ``owner`` (the owner's full model), ``evaluation``.
Torch-backed names are imported lazily so reading a config stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedswarm.learning.errors import OffsiteError, TamperedPackageError
from fedswarm.learning.lazy_exports import import_lazily
from fedswarm.learning.offsite.layout import OffsiteLayout, parse_adapter_layers
from fedswarm.learning.offsite.package import OffsitePackage, build_package, open_package

if TYPE_CHECKING:
    from fedswarm.learning.offsite.evaluation import evaluate_loss
    from fedswarm.learning.offsite.owner import OwnerModel
    from fedswarm.learning.offsite.trainer import OffsiteTrainer

_LAZY = {
    "evaluate_loss": "evaluation",
    "OwnerModel": "owner",
    "OffsiteTrainer": "trainer",
}


def __getattr__(name: str) -> Any:
    return import_lazily(__name__, _LAZY, globals(), name)


__all__ = [
    "OffsiteError",
    "OffsiteLayout",
    "OffsitePackage",
    "OffsiteTrainer",
    "OwnerModel",
    "TamperedPackageError",
    "build_package",
    "evaluate_loss",
    "open_package",
    "parse_adapter_layers",
]
