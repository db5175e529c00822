"""A member's side of offsite-tuning: train the adapter layers on the emulator.

Deliberately small and separate from ``LocalTrainer``: here the model is a package the
member verified, the trainable part is whole layers (or LoRA on them) rather than a
fresh adapter, and nothing about the owner's full model is ever available. Data, batches,
the lr schedule and the evaluation are the same code the LoRA trainer uses.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
from fedswarm.learning.adapter_vector import (
    flatten_state,
    state_fingerprint,
    unflatten_state,
    vector_fingerprint,
)
from fedswarm.learning.checkpoint_files import (
    open_latest,
    save_round,
)
from fedswarm.learning.dataset import prepare_data
from fedswarm.learning.errors import CheckpointError, LearningError
from fedswarm.learning.examples import BatchStream
from fedswarm.learning.model_loading import load_tokenizer
from fedswarm.learning.offsite.emulator import load_emulator
from fedswarm.learning.offsite.evaluation import evaluate_loss
from fedswarm.learning.offsite.layers import LayerWeights, adapter_layer_weights
from fedswarm.learning.offsite.package import OffsitePackage
from fedswarm.learning.schedule import learning_rate
from fedswarm.learning.settings import DataSettings, LoraSettings, ModelSettings, TrainSettings
from fedswarm.learning.trainer import EvalReport, RollbackPoint, TrainReport

LORA_INIT_SEED = 0
CHECKPOINT_FORMAT = "fedswarm-offsite-member-1"
_STATE_FILE = "offsite_member_state.pt"


class OffsiteTrainer:
    """Train, evaluate and exchange one member's adapter layers on the owner's emulator."""

    def __init__(
        self,
        package: OffsitePackage,
        data: DataSettings,
        train: TrainSettings,
        *,
        lora: LoraSettings | None = None,
        device: str = "auto",
    ) -> None:
        self.package = package
        self.train_settings = train
        self.tokenizer = load_tokenizer(ModelSettings(str(package.path)))
        # One LoRA draw for the whole federation (and the owner): averaged changes only
        # mean something when everyone started from the same adapter.
        self.model = load_emulator(package, lora, seed=LORA_INIT_SEED, device=device)
        self.data = prepare_data(data, self.tokenizer, train.seed)
        self.num_train_samples = self.data.train_rows
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.stream = BatchStream(self.data.train, train.batch_size, train.seed, self.pad_id)
        self._trainable = sorted(
            ((n, p) for n, p in self.model.named_parameters() if p.requires_grad),
            key=lambda item: item[0],
        )
        self.optimizer = torch.optim.AdamW(
            [p for _, p in self._trainable], lr=train.lr, weight_decay=train.weight_decay
        )
        self.step = 0
        self.initial_vector = self.adapter_vector()
        """The package's adapter layers (and LoRA's shared draw): what changes are measured from."""

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device  # type: ignore[operator]

    def train(self, steps: int | None = None) -> TrainReport:
        """``steps`` AdamW steps on the adapter layers; a non-finite loss changes nothing."""
        cfg = self.train_settings
        steps = cfg.local_steps if steps is None else steps
        if steps <= 0:
            raise ValueError("steps: must be positive")
        self.model.train()
        started, losses, tokens = time.perf_counter(), [], 0
        params = [p for _, p in self._trainable]
        for _ in range(steps):
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate(self.step, cfg)
            step_loss = 0.0
            for _ in range(cfg.grad_accum):
                batch = {k: v.to(self.device) for k, v in self.stream.next_batch().items()}
                loss = self.model(**batch).loss
                (loss / cfg.grad_accum).backward()
                step_loss += loss.item() / cfg.grad_accum
                tokens += int(batch["attention_mask"].sum())
            if not math.isfinite(step_loss):
                self.optimizer.zero_grad(set_to_none=True)
                raise LearningError(
                    f"loss became {step_loss} at step {self.step}; "
                    "update skipped, adapter layers unchanged"
                )
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            losses.append(step_loss)
        return TrainReport(
            steps=steps,
            loss=sum(losses) / len(losses),
            tokens=tokens,
            seconds=time.perf_counter() - started,
        )

    def evaluate(self) -> EvalReport:
        """The emulator-with-adapters' loss on this member's eval set (all it can measure)."""
        return evaluate_loss(
            self.model,
            self.data.eval,
            self.train_settings.batch_size,
            self.pad_id,
            self.train_settings.eval_batches,
        )

    def adapter_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().to("cpu", torch.float32).clone() for n, p in self._trainable}

    def adapter_vector(self) -> np.ndarray:
        """The trainable tensors as one float32 vector (sorted names): what a group averages."""
        return flatten_state(self.adapter_state())[0]

    def load_adapter_vector(self, vector: np.ndarray) -> None:
        """Set the adapter layers from an averaged vector (its layout checked first)."""
        _, manifest = flatten_state(self.adapter_state())
        state = unflatten_state(vector, manifest)
        with torch.no_grad():
            for name, p in self._trainable:
                p.copy_(state[name].to(p.device, p.dtype))

    def adapter_layer_weights(self) -> LayerWeights:
        """The adapter layers as full-model layer weights (what the owner plugs in)."""
        return adapter_layer_weights(self.model, self.package.layout)

    # -- what the round runner asks of any trainer (daemon/round_runner.py) -------------

    def adapter_fingerprint(self) -> str:
        """A short hash of the adapter layers, for heartbeats and the round log."""
        return state_fingerprint(self.adapter_state())

    def fingerprint_of(self, vector: np.ndarray) -> str:
        """What ``adapter_fingerprint`` would be after ``load_adapter_vector(vector)``."""
        return vector_fingerprint(vector, flatten_state(self.adapter_state())[1])

    def adapter_snapshot(self) -> tuple[np.ndarray, str]:
        state = self.adapter_state()
        return flatten_state(state)[0], state_fingerprint(state)

    @property
    def adapter_size(self) -> int:
        return sum(int(p.numel()) for _, p in self._trainable)

    def rollback_point(self) -> RollbackPoint:
        """The adapter layers, AdamW state and step now (the validation gate's way back)."""
        return RollbackPoint(
            self.adapter_state(), copy.deepcopy(self.optimizer.state_dict()), {}, self.step
        )

    def roll_back(self, point: RollbackPoint) -> None:
        with torch.no_grad():
            for name, param in self._trainable:
                param.copy_(point.weights[name].to(param.device, param.dtype))
        self.optimizer.load_state_dict(point.optimizer)
        self.step = point.step

    def sample_outputs(self, n: int, max_new_tokens: int) -> list[tuple[str, str]]:
        """None: the emulator's completions say little about the owner's model."""
        return []

    def save_checkpoint(self, directory: Path, round: int) -> None:
        """Adapter layers, optimiser, step and data position, atomically
        (``checkpoint_files``: a crash leaves ``LATEST`` naming a complete checkpoint)."""
        directory = Path(directory)
        adapter = self.adapter_state()
        state = {
            "adapter": adapter,
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "stream": self.stream.state_dict(),
        }
        meta = {"format": CHECKPOINT_FORMAT, "round": int(round), "step": self.step,
                "package_id": self.package.package_id,
                "adapter_fingerprint": state_fingerprint(adapter)}
        save_round(directory, round, lambda tmp: torch.save(state, tmp / _STATE_FILE), meta)

    def load_checkpoint(self, directory: Path) -> int:
        """Restore the newest complete checkpoint under ``directory``; returns its round."""
        path, meta = open_latest(Path(directory), CHECKPOINT_FORMAT, "an offsite member")
        if meta.get("package_id") != self.package.package_id:
            raise CheckpointError(f"{path}: checkpoint of another package; move it away "
                                  "to start from this one")
        try:
            state = torch.load(path / _STATE_FILE, map_location="cpu", weights_only=True)
            adapter = state["adapter"]
            mine = self.adapter_state()
            if {k: tuple(v.shape) for k, v in adapter.items()} != \
                    {k: tuple(v.shape) for k, v in mine.items()}:
                raise ValueError("adapter layers do not match this package")
            with torch.no_grad():
                for name, param in self._trainable:
                    param.copy_(adapter[name].to(param.device, param.dtype))
            self.optimizer.load_state_dict(state["optimizer"])
            self.stream.load_state_dict(state["stream"])
            self.step = int(state["step"])
        except (OSError, KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise CheckpointError(f"{path}: checkpoint does not fit this trainer: {exc}") from exc
        return int(meta["round"])
