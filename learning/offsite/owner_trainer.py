"""The model owner as the round runner sees it: a "trainer" that never trains.

The daemon's round runner asks every member for the same things (evaluate, checkpoint,
fingerprint, roll back). The owner holds no training data: its rounds are "take part
in the group with weight 0, plug in the confirmed average, export" (``OffsiteOwner``).
What it evaluates is its plugged-in **full** model, on its ``[data]`` set (a held-out
set of its own, never trained on); what it checkpoints is the plugged-in adapter-layer
vector, never the full model (that is exported to ``[offsite] export_dir``).
"""

from __future__ import annotations

import copy
import io
from pathlib import Path

import numpy as np
from fedswarm.learning.adapter_vector import vector_fingerprint
from fedswarm.learning.checkpoint_files import (
    open_latest,
    save_round,
)
from fedswarm.learning.dataset import prepare_data
from fedswarm.learning.errors import CheckpointError
from fedswarm.learning.offsite.evaluation import evaluate_loss
from fedswarm.learning.offsite.owner import OwnerModel
from fedswarm.learning.settings import DataSettings, TrainSettings
from fedswarm.learning.trainer import EvalReport, RollbackPoint

CHECKPOINT_FORMAT = "fedswarm-offsite-owner-1"
_VECTOR_FILE = "plugged_in.npy"


class OwnerTrainer:
    """Evaluate, checkpoint and fingerprint the owner's plugged-in adapter layers."""

    num_train_samples = 0
    """The owner's averaging weight: it adds nothing to any group sum."""

    def __init__(self, owner: OwnerModel, data: DataSettings, train: TrainSettings,
                 export_dir: Path | None = None) -> None:
        self.owner = owner
        self.export_dir = export_dir
        self.train_settings = train
        self.data = prepare_data(data, owner.tokenizer, train.seed)
        self.pad_id = int(owner.tokenizer.pad_token_id)

    def _manifest(self) -> list[tuple[str, tuple[int, ...]]]:
        params = dict(self.owner.emulator.named_parameters())
        return [(n, tuple(int(d) for d in params[n].shape)) for n in sorted(
            n for n, p in params.items() if p.requires_grad)]

    def evaluate(self) -> EvalReport:
        """The plugged-in full model's loss on the owner's own held-out set."""
        data = self.data.eval or self.data.train
        return evaluate_loss(self.owner.model, data, self.train_settings.batch_size,
                             self.pad_id, self.train_settings.eval_batches)

    def adapter_vector(self) -> np.ndarray:
        return self.owner.vector.copy()

    def load_adapter_vector(self, vector: np.ndarray) -> None:
        self.owner.plug_in_vector(vector)

    def adapter_fingerprint(self) -> str:
        return self.fingerprint_of(self.owner.vector)

    def fingerprint_of(self, vector: np.ndarray) -> str:
        return vector_fingerprint(vector, self._manifest())

    def adapter_snapshot(self) -> tuple[np.ndarray, str]:
        return self.owner.vector.copy(), self.adapter_fingerprint()

    @property
    def adapter_size(self) -> int:
        return int(self.owner.vector.size)

    def rollback_point(self) -> RollbackPoint:
        return RollbackPoint({}, {"vector": self.owner.vector.copy()}, {}, 0)

    def roll_back(self, point: RollbackPoint) -> None:
        self.load_adapter_vector(copy.deepcopy(point.optimizer["vector"]))

    def sample_outputs(self, n: int, max_new_tokens: int) -> list[tuple[str, str]]:
        return []

    def save_checkpoint(self, directory: Path, round: int) -> None:
        """The plugged-in vector (not the full model), atomically (``checkpoint_files``);
        the full model is exported first when its plugged-in layers changed since the last
        export (an adapter adopted by catch-up, not plugged in by ``OffsiteOwner``)."""
        directory = Path(directory)
        exported = self.owner.exported
        if self.export_dir is not None and (
            exported is None or not np.array_equal(exported, self.owner.vector)
        ):
            self.owner.export(self.export_dir)
        vector = self.owner.vector.copy()

        def fill(tmp: Path) -> None:
            buf = io.BytesIO()
            np.save(buf, vector.astype("<f4"), allow_pickle=False)
            (tmp / _VECTOR_FILE).write_bytes(buf.getvalue())

        meta = {"format": CHECKPOINT_FORMAT, "round": int(round),
                "package_id": self.owner.package.package_id,
                "adapter_fingerprint": self.adapter_fingerprint()}
        save_round(directory, round, fill, meta)

    def load_checkpoint(self, directory: Path) -> int:
        path, meta = open_latest(Path(directory), CHECKPOINT_FORMAT, "an offsite owner")
        if meta.get("package_id") != self.owner.package.package_id:
            raise CheckpointError(f"{path}: checkpoint of another package; move it away "
                                  "to start from this one")
        try:
            vector = np.load(path / _VECTOR_FILE, allow_pickle=False).astype(np.float32)
            if vector.shape != self.owner.vector.shape:
                raise ValueError(f"{vector.size} values, the package has {self.owner.vector.size}")
            self.load_adapter_vector(vector)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: checkpoint does not fit this owner: {exc}") from exc
        return int(meta["round"])

