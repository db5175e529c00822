"""fedswarm.learning: local LoRA training, evaluation, checkpoints and the demo assets.

The daemon uses only the names exported here. Nothing in this package imports asyncio,
libp2p or secagg: training is blocking code that the daemon runs in a worker thread.

Names are imported on first use (PEP 562): ``fedswarm config check`` reads the settings
and errors from here and must not pay for importing torch and transformers (seconds),
which ``LocalTrainer`` and the adapter helpers need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedswarm.learning.errors import (
    BadRowError,
    CheckpointError,
    DataError,
    ExportError,
    LearningError,
    ModelLoadError,
    PrivacyBudgetSpentError,
    PrivacyConfigError,
)
from fedswarm.learning.lazy_exports import import_lazily
from fedswarm.learning.settings import (
    DataSettings,
    LoraSettings,
    ModelSettings,
    PrivacySettings,
    TrainSettings,
)

if TYPE_CHECKING:
    from fedswarm.learning.adapter_vector import flatten_state, state_fingerprint, unflatten_state
    from fedswarm.learning.checkpoint_files import has_checkpoint
    from fedswarm.learning.data_files import BadRow
    from fedswarm.learning.trainer import EvalReport, LocalTrainer, TrainReport

_LAZY = {
    "flatten_state": "adapter_vector",
    "state_fingerprint": "adapter_vector",
    "unflatten_state": "adapter_vector",
    "has_checkpoint": "checkpoint_files",
    "BadRow": "data_files",
    "EvalReport": "trainer",
    "LocalTrainer": "trainer",
    "TrainReport": "trainer",
}


def __getattr__(name: str) -> Any:
    return import_lazily(__name__, _LAZY, globals(), name)


__all__ = [
    "BadRow",
    "BadRowError",
    "CheckpointError",
    "DataError",
    "DataSettings",
    "EvalReport",
    "ExportError",
    "LearningError",
    "LocalTrainer",
    "LoraSettings",
    "ModelLoadError",
    "ModelSettings",
    "PrivacyBudgetSpentError",
    "PrivacyConfigError",
    "PrivacySettings",
    "TrainReport",
    "TrainSettings",
    "flatten_state",
    "has_checkpoint",
    "state_fingerprint",
    "unflatten_state",
]
