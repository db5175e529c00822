"""``KSeedTrainer``: one member's FedKSeed training, checkpoint and export.

It is a ``LocalTrainer`` to the daemon (the round runner, catch-up and the dashboard
call the same methods), sharing its data pipeline, evaluation and generation, but it
trains differently: no adapter and no optimiser, the full model (or all of it but the
embedding) moved along the federation's K seeds by zeroth-order steps, and what it
exchanges is the K-vector (``state.KSeedState``), not an adapter.

The weights in memory are always, after a group result, a catch-up, a rollback or a
restart, the canonical ``replay`` of the K-vector from the base weights: that is what
makes members bit-identical. Local steps move the weights directly (cheap); a
checkpoint or an export replays first if steps have moved them since.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fedswarm.learning.checkpoint_files import (
    open_latest,
    save_round,
    write_atomic_dir,
)
from fedswarm.learning.dataset import prepare_data
from fedswarm.learning.errors import CheckpointError, ExportError, LearningError, ModelLoadError
from fedswarm.learning.examples import BatchStream
from fedswarm.learning.model_loading import load_base_model, load_tokenizer
from fedswarm.learning.settings import DataSettings, LoraSettings, ModelSettings, TrainSettings
from fedswarm.learning.trainer import LocalTrainer, RollbackPoint, TrainReport

from .errors import BaseModelMismatchError, KVectorError
from .parameters import base_model_sha256, parameters_fingerprint, tuned_tensors
from .replay import add_direction, replay
from .sampling import seed_probabilities
from .seed_pool import seed_pool
from .settings import KSeedSettings
from .state import KSeedState, check_vector
from .zeroth_order import projected_gradient

log = logging.getLogger("fedswarm.learning.fedkseed")

CHECKPOINT_FORMAT = "fedkseed-1"
STATE_FILE = "kseed_state.npz"
TRAINER_FILE = "trainer_state.json"
#: float32 rounding of an average of values within [-1, 1].
_AVERAGE_SLACK = 1e-5


@dataclass(frozen=True)
class KSeedRollbackPoint(RollbackPoint):
    """What ``KSeedTrainer.roll_back`` restores: the K-vector, data position and step."""

    state: KSeedState | None = None
    stream: dict[str, Any] | None = None


@dataclass
class ReplayReport:
    """The last replay: how many seeds it applied and how long it took."""

    seeds: int = 0
    seconds: float = 0.0


class KSeedTrainer(LocalTrainer):
    """Zeroth-order full-parameter tuning along K shared seeds (FedKSeed)."""

    def __init__(
        self,
        model: ModelSettings,
        data: DataSettings,
        train: TrainSettings,
        settings: KSeedSettings,
        federation_id: str,
        *,
        on_step: Callable[[int, float], None] | None = None,
    ) -> None:
        # Deliberately not LocalTrainer.__init__ (it attaches an adapter): the attributes
        # below are the ones the inherited evaluation and generation read.
        if model.load_in_4bit:
            raise ModelLoadError("[fedkseed] needs fp32 weights: set model.load_in_4bit = false")
        self.model_settings = dataclasses.replace(model, dtype="float32")  # fp32 master weights
        self.lora_settings = LoraSettings()
        self.data_settings = data
        self.train_settings = train
        self.settings = settings
        self.on_step = on_step
        self.on_privacy_spend = None
        self.privacy = None
        self.mark = None
        self.control = None
        self.freeze_lora_a = False
        self.tokenizer = load_tokenizer(self.model_settings)
        self.model, self.placement = load_base_model(self.model_settings)
        self.model.requires_grad_(False)
        self.model.eval()  # no dropout: both losses of a step must see the same network
        measured = base_model_sha256(self.model)
        if not settings.base_model_sha256:
            raise BaseModelMismatchError(
                f"[fedkseed] base_model_sha256 is not set; the base model at {model.path} "
                f"hashes to {measured}: pin that value on every member"
            )
        if measured != settings.base_model_sha256:
            raise BaseModelMismatchError(
                f"[fedkseed] base_model_sha256 pins {settings.base_model_sha256} but the base "
                f"model at {model.path} hashes to {measured}: not the federation's base model"
            )
        self.base_sha256 = measured
        self.tensors = tuned_tensors(self.model, settings.trainable)
        self._base = [t.param.detach().to("cpu", torch.float32, copy=True) for t in self.tensors]
        self.seeds = seed_pool(federation_id, measured, settings.k)
        self.state = KSeedState.zeros(settings.k)
        self._canonical = True  # the weights are the replay of ``state``
        self.last_replay = ReplayReport()
        self._rng = np.random.default_rng(train.seed)

        self.data = prepare_data(data, self.tokenizer, train.seed)
        self.bad_rows = self.data.bad_rows
        self.screen_result = None  # [data.screen] is refused in this mode (daemon config)
        self.screened_with_round = None
        self.alignment_examples = 0  # [data.alignment] is refused in this mode too
        self.num_train_samples = self.data.train_rows
        self.stream = BatchStream(
            self.data.train, train.batch_size, train.seed, int(self.tokenizer.pad_token_id)
        )
        self._trainable = [(t.name, t.param) for t in self.tensors]
        self.step = 0

    @property
    def tuned_parameters(self) -> int:
        return sum(t.param.numel() for t in self.tensors)

    # ------------------------------------------------------------------ training
    def train(self, steps: int | None = None) -> TrainReport:
        """``steps`` zeroth-order steps (default ``[fedkseed] steps_per_round``).

        A non-finite loss stops before the step (weights put back, K-vector unchanged)
        with a ``LearningError``, as ``LocalTrainer.train`` does.
        """
        cfg = self.settings
        steps = cfg.steps_per_round if steps is None else steps
        if steps <= 0:
            raise ValueError("steps: must be positive")
        probabilities = seed_probabilities(self.state.amplitudes, cfg.pro)
        started = time.perf_counter()
        losses: list[float] = []
        tokens = 0
        for _ in range(steps):
            j = int(self._rng.choice(cfg.k, p=probabilities))
            batch = self._to_device(self.stream.next_batch())
            measured = projected_gradient(
                self.tensors,
                int(self.seeds[j]),
                cfg.eps,
                functools.partial(self._batch_loss, batch),
            )
            if not (math.isfinite(measured.g) and math.isfinite(measured.loss)):
                raise LearningError(
                    f"loss became non-finite at step {self.step}; step skipped, weights unchanged"
                )
            g = max(-cfg.grad_clip, min(cfg.grad_clip, measured.g))
            delta = float(np.float32(-cfg.lr * g))
            add_direction(self.tensors, int(self.seeds[j]), delta)
            self._canonical = False
            self.state.step(j, delta, abs(g))
            tokens += int(batch["attention_mask"].sum())
            self.step += 1
            losses.append(measured.loss)
            if self.on_step is not None:
                self.on_step(self.step, measured.loss)
        return TrainReport(
            steps=steps,
            loss=sum(losses) / len(losses),
            tokens=tokens,
            seconds=time.perf_counter() - started,
        )

    def _batch_loss(self, batch: dict[str, torch.Tensor]) -> float:
        return float(self.model(**batch).loss)

    # ------------------------------------------------------------------ the K-vector
    def replay_state(self) -> ReplayReport:
        """Set the weights to the canonical replay of the K-vector."""
        started = time.perf_counter()
        seeds = replay(self.tensors, self._base, self.seeds, self.state.scalars)
        self._canonical = True
        self.last_replay = ReplayReport(seeds, time.perf_counter() - started)
        return self.last_replay

    def _ensure_canonical(self) -> None:
        if not self._canonical:
            self.replay_state()

    def exchange_vector(self) -> tuple[np.ndarray, int]:
        """What this member averages with its group, and how many scalars were clipped.

        ``[scalars / scalar_bound | amplitudes / grad_clip]`` (amplitudes with Pro), every
        value in [-1, 1]: the clip plain and secure averaging share.
        """
        cfg = self.settings
        scaled = self.state.scalars.astype(np.float64) / cfg.scalar_bound
        clipped = int(np.count_nonzero(np.abs(scaled) > 1.0))
        parts = [np.clip(scaled, -1.0, 1.0)]
        if cfg.pro:
            parts.append(np.clip(self.state.amplitudes / cfg.grad_clip, 0.0, 1.0))
        return np.concatenate(parts).astype(np.float32), clipped

    def load_group_average(self, average: np.ndarray) -> ReplayReport:
        """Adopt a group's average of ``exchange_vector``s and replay it.

        Every member of the group holds the same average, so the same float32 scalars
        and, by replay, the same weights. ``KVectorError`` (nothing changed) for a
        vector of the wrong length, with NaN, or outside [-1, 1].
        """
        cfg = self.settings
        flat = check_vector(average, cfg.vector_size, 1.0 + _AVERAGE_SLACK, "group average")
        scalars = (flat[: cfg.k] * np.float32(cfg.scalar_bound)).astype(np.float32)
        if cfg.pro:
            self.state.amplitudes = np.clip(flat[cfg.k :], 0.0, None) * np.float32(cfg.grad_clip)
        self.state.scalars = scalars
        return self.replay_state()

    # ------------------------------------------------------------------ catch-up
    @property
    def adapter_size(self) -> int:
        """Catch-up's vector: the K scalars, then the K amplitudes over ``grad_clip``."""
        return 2 * self.settings.k

    def adapter_vector(self) -> np.ndarray:
        """``[scalars | amplitudes / grad_clip]``: what a member catching up adopts (every
        value well inside the bound catch-up's codec puts on a value)."""
        amplitudes = self.state.amplitudes / np.float32(self.settings.grad_clip)
        return np.concatenate([self.state.scalars, amplitudes]).astype(np.float32)

    def adapter_snapshot(self) -> tuple[np.ndarray, str]:
        return self.adapter_vector(), self.state.fingerprint()

    def adapter_fingerprint(self) -> str:
        """The K-vector's fingerprint: equal K-vectors replay to equal weights."""
        return self.state.fingerprint()

    def fingerprint_of(self, vector: np.ndarray) -> str:
        k = self.settings.k
        scalars = check_vector(vector, 2 * k, 1e3, "K-vector")[:k]
        return KSeedState(scalars, np.zeros(k, np.float32), np.zeros(k, np.int64)).fingerprint()

    def load_adapter_vector(self, vector: np.ndarray) -> None:
        """Adopt a neighbour's K-vector (catch-up) and replay it; checked first."""
        k, cfg = self.settings.k, self.settings
        flat = check_vector(vector, 2 * k, 1e3, "K-vector")
        check_vector(flat[:k], k, cfg.scalar_bound * (1 + _AVERAGE_SLACK), "K-vector scalars")
        check_vector(flat[k:], k, 1 + _AVERAGE_SLACK, "K-vector amplitudes")
        self.state.scalars = flat[:k].copy()
        self.state.amplitudes = np.clip(flat[k:], 0.0, 1.0) * np.float32(cfg.grad_clip)
        self.replay_state()

    def parameters_fingerprint(self) -> str:
        """Hash of every weight, after replaying if local steps moved them."""
        self._ensure_canonical()
        return parameters_fingerprint(self.model)

    # ------------------------------------------------------------------ rollback
    def rollback_point(self) -> KSeedRollbackPoint:
        return KSeedRollbackPoint(
            weights={},
            optimizer={},
            anchor={},
            step=self.step,
            state=self.state.copy(),
            stream=self.stream.state_dict(),
        )

    def roll_back(self, point: RollbackPoint) -> None:
        if not isinstance(point, KSeedRollbackPoint) or point.state is None:
            raise LearningError("roll_back: not a point made by this FedKSeed trainer")
        self.state = point.state.copy()
        if point.stream is not None:
            self.stream.load_state_dict(point.stream)
        self.step = point.step
        self.replay_state()

    # ------------------------------------------------------------------ persistence
    def save_checkpoint(self, directory: Path, round: int) -> None:
        """The K-vector, Pro's counts, step, data position and seed RNG, atomically.

        A few KB whatever the model's size: the weights are the replay of the K-vector.
        """
        self._ensure_canonical()
        directory = Path(directory)
        trainer_state = {
            "step": self.step,
            "stream": self.stream.state_dict(),
            "rng": self._rng.bit_generator.state,
        }

        def fill(tmp: Path) -> None:
            with (tmp / STATE_FILE).open("wb") as f:
                np.savez(
                    f,
                    scalars=self.state.scalars,
                    amplitudes=self.state.amplitudes,
                    counts=self.state.counts,
                )
            (tmp / TRAINER_FILE).write_text(json.dumps(trainer_state), encoding="utf-8")

        meta = {
            "format": CHECKPOINT_FORMAT,
            "round": int(round),
            "step": self.step,
            "base_model": self.model_settings.path,
            "base_model_sha256": self.base_sha256,
            "k": self.settings.k,
            "adapter_fingerprint": self.state.fingerprint(),
            "parameters_fingerprint": parameters_fingerprint(self.model),
        }
        save_round(directory, round, fill, meta)

    def load_checkpoint(self, directory: Path) -> int:
        """Restore the newest complete checkpoint and replay it; returns its round."""
        path, meta = open_latest(Path(directory), CHECKPOINT_FORMAT, "a FedKSeed")
        if meta.get("base_model_sha256") != self.base_sha256 or meta.get("k") != self.settings.k:
            raise CheckpointError(f"{path}: written for another base model or pool size")
        try:
            with np.load(path / STATE_FILE) as arrays:
                k = self.settings.k
                state = KSeedState(
                    check_vector(
                        arrays["scalars"], k, self.settings.scalar_bound * 1e3, "checkpoint scalars"
                    ).copy(),
                    check_vector(arrays["amplitudes"], k, 1e9, "checkpoint amplitudes").copy(),
                    np.asarray(arrays["counts"], dtype=np.int64).copy(),
                )
            trainer = json.loads((path / TRAINER_FILE).read_text(encoding="utf-8"))
            self.stream.load_state_dict(trainer["stream"])
            self._rng.bit_generator.state = trainer["rng"]
            self.step = int(trainer["step"])
        except KVectorError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
        except Exception as exc:  # numpy and pickle raise many types
            raise CheckpointError(f"{path}: unreadable checkpoint files: {exc}") from exc
        if state.counts.shape != (self.settings.k,):
            raise CheckpointError(f"{path}: Pro counts have the wrong length")
        self.state = state
        self.replay_state()
        return int(meta["round"])

    def export_adapter(self, out_dir: Path, model_card: str | None = None) -> None:
        """Write the tuned full model as a standard ``save_pretrained`` folder
        (``AutoModelForCausalLM.from_pretrained`` loads it), with its tokenizer."""
        self._ensure_canonical()
        out_dir = Path(out_dir)
        meta = {
            "round_step": self.step,
            "base_model": self.model_settings.path,
            "base_model_sha256": self.base_sha256,
            "adapter_fingerprint": self.state.fingerprint(),
            "parameters_fingerprint": parameters_fingerprint(self.model),
        }

        def fill(tmp: Path) -> None:
            self.model.save_pretrained(str(tmp))
            self.tokenizer.save_pretrained(str(tmp))
            if model_card is not None:
                (tmp / "README.md").write_text(model_card, encoding="utf-8")

        try:
            write_atomic_dir(out_dir, fill, meta)
        except OSError as exc:
            raise ExportError(f"{out_dir}: cannot export model: {exc}") from exc

    # ------------------------------------------------------------------ LoRA only
    def _lora_only(self, what: str) -> LearningError:
        return LearningError(f"{what}: a LoRA trainer's method; FedKSeed has no adapter")

    def averaging_vector(self, with_moments: bool) -> np.ndarray:
        raise self._lora_only("averaging_vector")

    def load_averaging_vector(self, vector: np.ndarray, with_moments: bool) -> None:
        raise self._lora_only("load_averaging_vector")

    def adapter_state(self) -> dict[str, torch.Tensor]:
        raise self._lora_only("adapter_state")
