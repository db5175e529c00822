"""fedswarm.learning: local LoRA training, evaluation, checkpoints and the demo assets.

The daemon uses only the names exported here. Nothing in this package imports asyncio,
libp2p or secagg: training is blocking code that the daemon runs in a worker thread.
"""

from fedswarm.learning.adapter_vector import flatten_state, state_fingerprint, unflatten_state
from fedswarm.learning.checkpoint_files import has_checkpoint
from fedswarm.learning.data_files import BadRow
from fedswarm.learning.errors import (
    BadRowError,
    CheckpointError,
    DataError,
    ExportError,
    LearningError,
    ModelLoadError,
)
from fedswarm.learning.settings import DataSettings, LoraSettings, ModelSettings, TrainSettings
from fedswarm.learning.trainer import EvalReport, LocalTrainer, TrainReport

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
    "TrainReport",
    "TrainSettings",
    "flatten_state",
    "has_checkpoint",
    "state_fingerprint",
    "unflatten_state",
]
