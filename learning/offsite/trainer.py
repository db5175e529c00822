"""A member's side of offsite-tuning: train the adapter layers on the emulator.

Deliberately small and separate from ``LocalTrainer``: here the model is a package the
member verified, the trainable part is whole layers (or LoRA on them) rather than a
fresh adapter, and nothing about the owner's full model is ever available. Data, batches,
the lr schedule and the evaluation are the same code the LoRA trainer uses.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from fedswarm.learning.adapter_vector import flatten_state, unflatten_state
from fedswarm.learning.dataset import prepare_data
from fedswarm.learning.errors import LearningError
from fedswarm.learning.examples import BatchStream
from fedswarm.learning.model_loading import load_tokenizer
from fedswarm.learning.offsite.emulator import load_emulator
from fedswarm.learning.offsite.evaluation import evaluate_loss
from fedswarm.learning.offsite.layers import LayerWeights, adapter_layer_weights
from fedswarm.learning.offsite.package import OffsitePackage
from fedswarm.learning.schedule import learning_rate
from fedswarm.learning.settings import DataSettings, LoraSettings, ModelSettings, TrainSettings
from fedswarm.learning.trainer import EvalReport, TrainReport

LORA_INIT_SEED = 0


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
        return self.model.get_input_embeddings().weight.device

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
