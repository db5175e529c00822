"""The local trainer: one peer's model, adapter, data, optimiser and schedule.

It is plain blocking code; the daemon runs it in a worker thread (``asyncio.to_thread``)
and talks to it only through the methods below. The training loop is deliberately
written out by hand, top to bottom, instead of using ``transformers.Trainer``: a
federated round needs the optimiser and schedule to survive between calls, adapter
weights to be swapped from outside, and an optional FedProx term, all of which are
simpler to see than to configure. With ``privacy`` enabled each step is a DP-SGD step
(``dp_sgd.py``) and the steps a call may take are capped by the budget (``privacy.py``).
"""

from __future__ import annotations

import copy
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from fedswarm.learning import moment_averaging
from fedswarm.learning.adapter_vector import (
    Manifest,
    flatten_state,
    state_fingerprint,
    unflatten_state,
    vector_fingerprint,
)
from fedswarm.learning.checkpoint_files import (
    has_checkpoint,
    open_latest,
    save_round,
    write_atomic_dir,
)
from fedswarm.learning.control_variates import ControlState, ControlVariates
from fedswarm.learning.data_files import BadRow, Row
from fedswarm.learning.dataset import prepare_data
from fedswarm.learning.dp_sgd import GaussianNoise, PerExampleGradients, PoissonSampler, clipped_sum
from fedswarm.learning.errors import (
    CheckpointError,
    ExportError,
    LearningError,
    OwnershipError,
    PrivacyBudgetSpentError,
)
from fedswarm.learning.examples import (
    IGNORE_INDEX,
    BatchStream,
    Example,
    collate,
    encode_supervised,
    encode_text,
    eval_batches,
)
from fedswarm.learning.model_loading import attach_adapter, load_base_model, load_tokenizer
from fedswarm.learning.optimizer_moments import Moments, load_moments, read_moments
from fedswarm.learning.schedule import learning_rate
from fedswarm.learning.settings import (
    TRIGGERS_WITH_PRIVACY,
    AlignmentSettings,
    DataSettings,
    LoraSettings,
    ModelSettings,
    PrivacySettings,
    TrainSettings,
)
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

if TYPE_CHECKING:
    from fedswarm.learning.ownership import MarkLoss, MarkPlan
    from fedswarm.learning.ownership.triggers import TriggerSet

    # Imported when privacy is enabled: Opacus costs about 1 s at start-up otherwise.
    from fedswarm.learning.privacy import PrivacyBudget, Spend
    from fedswarm.learning.screening.screen import ScreenResult
    from fedswarm.learning.screening.settings import ScreenSettings

CHECKPOINT_FORMAT = 1
ADAPTER_FILE = "adapter_model.safetensors"
# Exported next to the adapter with [ownership]: each norm layer's Δγ (base + Δγ = its scale),
# keyed by plain module name (``learning.ownership.embedding.exported_deltas``).
SCALE_DELTAS_FILE = "ownership_scale_deltas.safetensors"
DELTA_MARKER = ".ownership_delta"  # ownership.embedding.DELTA_NAME, without importing it
# A text sample's prompt: this many tokens from the start of an eval block.
TEXT_PROMPT_TOKENS = 16
# Every member draws LoRA's A from this seed, whatever its own train.seed and device, so
# the federation starts from one adapter (B is zero) and frozen-A LoRA's A matrices are
# equal without ever being sent.
SHARED_A_SEED = 0


@dataclass
class TrainReport:
    """What one ``train()`` call did; ``loss`` is the mean over its steps."""

    steps: int
    loss: float
    tokens: int
    seconds: float
    epsilon: float | None = None  # ε spent so far, with [privacy] enabled
    mark_detected: float | None = None  # share of own ownership bits carried, with [ownership]


@dataclass
class EvalReport:
    """Token-weighted eval loss over the eval set, and its perplexity."""

    loss: float
    perplexity: float
    tokens: int


@dataclass(frozen=True)
class RollbackPoint:
    """What ``LocalTrainer.roll_back`` restores (opaque to callers)."""

    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    anchor: dict[str, torch.Tensor]
    step: int
    control: ControlState | None = None


class LocalTrainer:
    """Train, evaluate, swap, checkpoint and export one peer's adapter."""

    def __init__(self, model: ModelSettings, lora: LoraSettings, data: DataSettings,
                 train: TrainSettings, *,
                 on_step: Callable[[int, float], None] | None = None,
                 privacy: PrivacySettings | None = None,
                 on_privacy_spend: Callable[[Spend], None] | None = None,
                 ownership: MarkPlan | None = None,
                 freeze_lora_a: bool = False, scaffold: bool = False,
                 screen: ScreenSettings | None = None,
                 screen_with_checkpoint: Path | None = None,
                 alignment: AlignmentSettings | None = None) -> None:
        self.model_settings = model
        self.lora_settings = lora
        self.data_settings = data
        self.train_settings = train
        self.on_step = on_step
        # Called with the steps about to be taken, *before* they are: the daemon persists
        # them, so a crash can over-count the privacy budget but never forget a step.
        self.on_privacy_spend = on_privacy_spend

        self.tokenizer = load_tokenizer(model)
        base, self.placement = load_base_model(model)
        # The adapter's random init must be the same on every run with the same seed,
        # without reseeding the caller's global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(train.seed)
            self.model = attach_adapter(base, lora)
        # Before the trainable list is taken: the norm scales' deltas join the adapter.
        self.mark: MarkLoss | None = None
        if ownership is not None:
            from fedswarm.learning.ownership import attach_mark

            self.mark = attach_mark(self.model, ownership)
        self.triggers: TriggerSet | None = None
        if ownership is not None and ownership.settings.triggers:
            from fedswarm.learning.ownership.triggers import triggers_for

            if privacy is not None and privacy.enabled:
                raise OwnershipError(TRIGGERS_WITH_PRIVACY)
            self.triggers = triggers_for(ownership.key, ownership.settings.triggers,
                                         self.tokenizer)
            self.trigger_weight = ownership.settings.trigger_weight
        self.freeze_lora_a = freeze_lora_a
        draw_shared_lora_a(self.model, freeze=freeze_lora_a)
        self._trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

        screener = None
        # The round of the checkpoint whose adapter the quality screen scored rows with;
        # None: the adapter as initialised (no checkpoint yet, or no quality screen).
        self.screened_with_round: int | None = None
        if screen is not None and screen.enabled:  # docs/safety.md
            from fedswarm.learning.screening.build import screener as make_screener

            if (screen.loss_outlier_mads is not None and screen_with_checkpoint is not None
                    and has_checkpoint(screen_with_checkpoint)):
                # "loss under the current shared model": the federation's latest averaged
                # adapter, not a fresh one (load_checkpoint reloads it with the rest later)
                _, meta, _ = self._load_checkpoint_weights(Path(screen_with_checkpoint))
                self.screened_with_round = int(meta["round"])
            screener = make_screener(screen, self.row_losses)
        self.data = prepare_data(data, self.tokenizer, train.seed, screen=screener)
        # [data.alignment]: the shared set's examples join the private ones (not screened,
        # never held out for eval, not counted in num_train_samples: docs/safety.md)
        self.alignment_examples = 0
        if alignment is not None and alignment.enabled:
            from fedswarm.learning.alignment_set import load_alignment_examples, mix_alignment

            shared = load_alignment_examples(alignment, self.tokenizer, data.max_length)
            mixed = mix_alignment(self.data.train, shared, alignment.share, train.seed)
            self.alignment_examples = len(mixed) - len(self.data.train)
            self.data.train = mixed
        self.bad_rows: list[BadRow] = self.data.bad_rows
        self.screen_result: ScreenResult | None = self.data.screen
        self.num_train_samples: int = self.data.train_rows
        self.stream = BatchStream(self.data.train, train.batch_size, train.seed,
                                  int(self.tokenizer.pad_token_id))
        self.optimizer = torch.optim.AdamW([p for _, p in self._trainable], lr=train.lr,
                                           weight_decay=train.weight_decay)
        self.step = 0  # global optimiser step across rounds; drives the lr schedule
        # SCAFFOLD ([federation] scaffold): drift correction added to every step's gradient.
        self.control = ControlVariates(self._trainable) if scaffold else None
        self._anchor = self._snapshot()  # FedProx reference: the last adapter set from outside
        self.privacy: PrivacyBudget | None = None
        if privacy is not None and privacy.enabled:
            self._set_up_privacy(privacy)

    def _set_up_privacy(self, privacy: PrivacySettings) -> None:
        """DP-SGD: the plan (refused here if it cannot be accounted for), sampler, noise."""
        from fedswarm.learning.privacy import PrivacyBudget, make_plan, refuse_packed_text

        refuse_packed_text(self.data.format, self.data_settings.packing)
        plan = make_plan(privacy, self.train_settings, len(self.data.train))
        self.privacy = PrivacyBudget(plan)
        self._sampler = PoissonSampler(plan.examples, plan.sample_rate)
        self._noise = GaussianNoise(plan.noise_multiplier, plan.max_grad_norm,
                                    self._trainable[0][1].device)
        vectorised = self.lora_settings.peft_type == "LORA" and not self.model_settings.load_in_4bit
        self._per_example = PerExampleGradients(self.model, self._trainable, vectorised)

    # ------------------------------------------------------------------ helpers
    @property
    def input_device(self) -> torch.device:
        """Where batches go; with a multi-GPU device map, that is the embedding's device."""
        return self.model.get_input_embeddings().weight.device

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self._trainable}

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.input_device, non_blocking=True) for k, v in batch.items()}

    def anchor_vector(self) -> np.ndarray:
        """The last adapter set from outside (``adapter_vector`` layout): the group's
        model this round's local training started from. Group momentum measures the
        group's step from it."""
        return flatten_state({n: t.detach().to("cpu", torch.float32)
                              for n, t in self._anchor.items()})[0]

    def _proximal_term(self) -> torch.Tensor:
        """FedProx: (mu/2)·||w − w_global||², keeping local drift near the group average."""
        total = torch.zeros((), device=self.input_device)
        for name, p in self._trainable:
            total = total + (p - self._anchor[name]).float().pow(2).sum().to(total.device)
        return 0.5 * self.train_settings.fedprox_mu * total

    # ------------------------------------------------------------------ training
    def train(self, steps: int | None = None) -> TrainReport:
        """Run ``steps`` optimiser steps (default ``local_steps``), continuing the
        schedule and AdamW state of earlier calls.

        A non-finite loss stops before the optimiser step, so the weights are never
        poisoned; the caller gets a ``LearningError`` and keeps its last good adapter.

        With DP enabled it takes only as many steps as the budget allows (the report says
        how many), reported to ``on_privacy_spend`` before the first; with no room for
        one step it raises ``PrivacyBudgetSpentError`` and trains nothing.
        """
        cfg = self.train_settings
        steps = cfg.local_steps if steps is None else steps
        if steps <= 0:
            raise ValueError("steps: must be positive")
        if self.privacy is not None:
            steps = self._reserve_privacy(steps)
        self.model.train()
        started = time.perf_counter()
        losses: list[float] = []
        tokens = 0
        for _ in range(steps):
            lr = learning_rate(self.step, cfg)
            for group in self.optimizer.param_groups:
                group["lr"] = lr

            if self.privacy is not None:
                step_loss, step_tokens = self._private_gradient()
            else:
                step_loss, step_tokens = self._gradient()
            tokens += step_tokens
            if self.triggers is not None:
                self._trigger_gradient()
            if self.mark is not None:
                # The scales' deltas follow the sign loss (no data in it, so it also comes
                # after DP-SGD's noise, like FedProx's pull) plus the task's gradient on
                # this member's share where no bit reads (of the noisy gradient under
                # DP-SGD: post-processing, no ε).
                self.mark.replace_gradients()

            if not math.isfinite(step_loss):
                self.optimizer.zero_grad(set_to_none=True)
                raise LearningError(f"loss became {step_loss} at step {self.step}; "
                                    "update skipped, adapter unchanged")
            # Under DP-SGD this clips the *noisy* batch gradient: post-processing, so it
            # spends nothing, and it keeps |exp_avg| <= max_grad_norm, which moment
            # averaging relies on (learning/moment_averaging.py). AdamW is nearly
            # invariant to the gradient's scale, so it costs little.
            torch.nn.utils.clip_grad_norm_([p for _, p in self._trainable], cfg.max_grad_norm)
            if self.control is not None:
                self.control.correct()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            losses.append(step_loss)
            if self.on_step is not None:
                self.on_step(self.step, step_loss)
        return TrainReport(steps=steps, loss=sum(losses) / len(losses), tokens=tokens,
                           seconds=time.perf_counter() - started,
                           epsilon=None if self.privacy is None else self.privacy.epsilon(),
                           mark_detected=None if self.mark is None else self.mark.detected())

    def _gradient(self) -> tuple[float, int]:
        """Accumulate ``grad_accum`` batches' gradients; returns (mean loss, tokens)."""
        cfg = self.train_settings
        step_loss, tokens = 0.0, 0
        for _ in range(cfg.grad_accum):
            batch = self._to_device(self.stream.next_batch())
            loss = self.model(**batch).loss
            if cfg.fedprox_mu > 0:
                loss = loss + self._proximal_term()
            (loss / cfg.grad_accum).backward()
            step_loss += loss.item() / cfg.grad_accum
            tokens += int(batch["attention_mask"].sum())
        return step_loss, tokens

    def _trigger_gradient(self) -> None:
        """Add the ownership trigger set's loss to this step's gradient (its own term, so a
        trigger's one labelled token is not drowned in a batch of packed text)."""
        from fedswarm.learning.ownership.triggers import trigger_loss

        assert self.triggers is not None
        (self.trigger_weight * trigger_loss(self.model, self.triggers)).backward()

    def _private_gradient(self) -> tuple[float, int]:
        """DP-SGD: (Σ clipped per-example gradients + noise) / expected batch, into ``.grad``.

        A Poisson batch may be empty; the step still happens (noise only) because the
        accountant counts it. The returned loss is the mean over the sampled examples
        (0.0 for an empty batch). FedProx's pull towards the anchor uses no data, so it
        is added after the noise, unclipped.
        """
        assert self.privacy is not None
        plan = self.privacy.plan
        summed = clipped_sum(self._per_example, self.data.train, self._sampler.sample(),
                             self.train_settings.batch_size, int(self.tokenizer.pad_token_id),
                             plan.max_grad_norm, self.input_device)
        mu = self.train_settings.fedprox_mu
        for name, p in self._trainable:
            noisy = (summed.grads[name] + self._noise.like(summed.grads[name]))
            grad = noisy / plan.expected_batch_size
            if mu > 0:
                grad = grad + mu * (p.detach() - self._anchor[name]).float()
            p.grad = grad.to(p.dtype)
        loss = sum(summed.losses) / len(summed.losses) if summed.losses else 0.0
        return loss, summed.tokens

    def _reserve_privacy(self, wanted: int) -> int:
        """How many of ``wanted`` steps the budget allows, recorded as spent before training."""
        from fedswarm.learning.privacy import Spend

        assert self.privacy is not None
        steps = self.privacy.affordable_steps(wanted)
        if steps == 0:
            raise PrivacyBudgetSpentError(
                f"privacy budget spent: ε = {self.privacy.epsilon():.3f} of "
                f"{self.privacy.plan.target_epsilon:g} (δ = {self.privacy.plan.delta:.3g}) after "
                f"{self.privacy.steps} DP-SGD steps; no further step fits")
        spend = Spend(self.privacy.plan.noise_multiplier, self.privacy.plan.sample_rate, steps)
        if self.on_privacy_spend is not None:
            self.on_privacy_spend(spend)
        self.privacy.spend(steps)
        return steps

    def restore_privacy_spend(self, history: list[Spend]) -> None:
        """Start from the steps an earlier run already spent (the daemon's persisted log)."""
        if self.privacy is None:
            raise LearningError("privacy is not enabled on this trainer")
        self.privacy.history = []
        for entry in history:
            self.privacy.record(entry)

    @torch.no_grad()
    def encode_rows(self, rows: list[Row]) -> list[Example | None]:
        """One example per row (text unpacked), None where a row cannot be encoded."""
        examples: list[Example | None] = []
        for row in rows:
            if row.format == "text":
                examples.append(encode_text([row], self.tokenizer, self.data_settings.max_length,
                                            packing=False)[0])
            else:
                encoded, _ = encode_supervised([row], self.tokenizer,
                                               self.data_settings.max_length)
                examples.append(encoded[0] if encoded else None)
        return examples

    def example_losses(self, examples: list[Example], batch_size: int = 16
                       ) -> list[tuple[float, int]]:
        """(summed token loss, predicted tokens) of each example under the model as it is."""
        out: list[tuple[float, int]] = []
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(examples), batch_size):
                    batch = self._to_device(collate(examples[start:start + batch_size],
                                                    int(self.tokenizer.pad_token_id)))
                    logits = self.model(input_ids=batch["input_ids"],
                                        attention_mask=batch["attention_mask"]).logits.float()
                    labels = batch["labels"][:, 1:]
                    token_loss = torch.nn.functional.cross_entropy(
                        logits[:, :-1].transpose(1, 2), labels, ignore_index=IGNORE_INDEX,
                        reduction="none")
                    counts = (labels != IGNORE_INDEX).sum(dim=1)
                    out += [(float(total), int(n)) for total, n in
                            zip(token_loss.sum(dim=1).tolist(), counts.tolist(), strict=True)]
        finally:
            self.model.train(was_training)
        return out

    def row_losses(self, rows: list[Row]) -> list[float]:
        """Each row's mean token loss under the model as it is now (the quality screen's
        score). A row that cannot be encoded gets NaN, which no cut drops: the encoder
        reports it as a bad row itself."""
        examples = self.encode_rows(rows)
        present = [(i, e) for i, e in enumerate(examples) if e is not None]
        losses = [math.nan] * len(rows)
        scored = self.example_losses([e for _, e in present])
        for (i, _), (total, n) in zip(present, scored, strict=True):
            losses[i] = total / max(n, 1)
        return losses

    def load_exported_adapter(self, folder: Path) -> None:
        """Load an adapter folder ``export_adapter`` (or PEFT's ``save_pretrained``) wrote."""
        try:
            adapter = load_file(str(Path(folder) / ADAPTER_FILE))
        except Exception as exc:  # safetensors raises several types
            raise CheckpointError(f"{folder}: no readable {ADAPTER_FILE}: {exc}") from exc
        current = get_peft_model_state_dict(self.model)
        if {k: tuple(v.shape) for k, v in adapter.items()} != \
                {k: tuple(v.shape) for k, v in current.items()}:
            raise CheckpointError(f"{folder}: adapter does not match this model/LoRA config")
        set_peft_model_state_dict(self.model, adapter)

    @torch.no_grad()
    def evaluate(self) -> EvalReport:
        """Loss weighted by the number of predicted tokens, on fixed eval batches.

        Without autograd: a graph recorded here would keep every layer's activations
        until the loss is read, for a backward that never comes.
        """
        if not self.data.eval:
            raise LearningError("no eval data: set data.eval_path or data.eval_fraction > 0")
        was_training = self.model.training
        self.model.eval()
        total, count = 0.0, 0
        try:
            for batch in eval_batches(self.data.eval, self.train_settings.batch_size,
                                      int(self.tokenizer.pad_token_id),
                                      self.train_settings.eval_batches):
                batch = self._to_device(batch)
                n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
                if n == 0:
                    continue
                total += float(self.model(**batch).loss) * n
                count += n
        finally:
            self.model.train(was_training)
        if count == 0:
            raise LearningError("eval data has no tokens to predict")
        loss = total / count
        return EvalReport(loss=loss, perplexity=math.exp(min(loss, 700.0)), tokens=count)

    # ------------------------------------------------------------------ adapter exchange
    def adapter_state(self) -> dict[str, torch.Tensor]:
        """Trainable adapter tensors: CPU, float32, detached copies, sorted by name."""
        return {n: p.detach().to("cpu", torch.float32).clone()
                for n, p in sorted(self._trainable, key=lambda item: item[0])}

    def adapter_vector(self) -> np.ndarray:
        """The adapter as one flat float32 vector in sorted-name order (what catch-up sends).

        The trainer is the one owner of the adapter's layout: callers never flatten or
        unflatten it themselves.
        """
        return flatten_state(self.adapter_state())[0]

    def load_adapter_vector(self, vector: np.ndarray) -> None:
        """Replace the adapter with a vector made by ``adapter_vector`` (checked first)."""
        _, manifest = flatten_state(self.adapter_state())
        self.load_adapter_state(unflatten_state(vector, manifest))

    def adapter_fingerprint(self) -> str:
        """A short hash of the adapter, for heartbeats and the round log."""
        return state_fingerprint(self.adapter_state())

    def _manifest(self) -> Manifest:
        """The adapter's names and shapes, in ``flatten_state`` order, without copying it."""
        return [(n, tuple(int(d) for d in p.shape))
                for n, p in sorted(self._trainable, key=lambda item: item[0])]

    def fingerprint_of(self, vector: np.ndarray) -> str:
        """What ``adapter_fingerprint`` would be after ``load_adapter_vector(vector)``."""
        return vector_fingerprint(vector, self._manifest())

    def adapter_snapshot(self) -> tuple[np.ndarray, str]:
        """``adapter_vector()`` and ``adapter_fingerprint()`` from one copy of the adapter."""
        state = self.adapter_state()
        return flatten_state(state)[0], state_fingerprint(state)

    @property
    def adapter_size(self) -> int:
        """How many values ``adapter_vector`` holds, without copying the adapter."""
        return sum(int(p.numel()) for _, p in self._trainable)

    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        """Replace the adapter (e.g. with the group average), after checking it fully.

        Nothing is written unless every tensor is valid, so a bad blob from a peer can
        never leave a half-replaced adapter. AdamW moments are kept (never reset):
        restarting Adam each round slows convergence; ``load_averaging_vector`` also
        replaces them with the group's when moments are averaged. The new weights
        become the FedProx anchor.
        """
        expected = dict(self._trainable)
        if set(state) != set(expected):
            missing = sorted(set(expected) - set(state))[:3]
            extra = sorted(set(state) - set(expected))[:3]
            raise LearningError(f"adapter keys differ: missing {missing}, unexpected {extra}")
        for name, tensor in state.items():
            if not isinstance(tensor, torch.Tensor):
                raise LearningError(f"{name}: not a tensor")
            if tuple(tensor.shape) != tuple(expected[name].shape):
                raise LearningError(f"{name}: shape {tuple(tensor.shape)}, "
                                    f"expected {tuple(expected[name].shape)}")
            if not tensor.is_floating_point() or not bool(torch.isfinite(tensor).all()):
                raise LearningError(f"{name}: contains NaN/inf or is not floating point")
        with torch.no_grad():
            for name, tensor in state.items():
                expected[name].copy_(tensor.to(expected[name].device, expected[name].dtype))
        self._anchor = self._snapshot()

    def control_vector(self) -> np.ndarray:
        """SCAFFOLD: this member's new ``c_i`` divided by ``max_grad_norm`` (in [-1, 1])."""
        if self.control is None:
            raise LearningError("control_vector: this trainer was built without scaffold")
        return self.control.estimate() / np.float32(self.train_settings.max_grad_norm)

    def load_control_average(self, vector: np.ndarray) -> None:
        """SCAFFOLD: the group's average of ``control_vector``s becomes ``c``."""
        if self.control is None:
            raise LearningError("load_control_average: this trainer was built without scaffold")
        self.control.load_group(np.asarray(vector, dtype=np.float32)
                                * np.float32(self.train_settings.max_grad_norm))

    # ------------------------------------------------------------------ rollback
    def rollback_point(self) -> RollbackPoint:
        """The trainable state now, to return to if a group result proves harmful.

        The validation gate (``[federation] max_eval_loss_increase``) takes one before
        applying a group's result and rolls back when the result raises this member's
        own eval loss too much: adapter, AdamW state, FedProx anchor, step and SCAFFOLD's
        control variates (a refused group's ``c`` must not steer the next round).
        """
        return RollbackPoint(self._snapshot(), copy.deepcopy(self.optimizer.state_dict()),
                             dict(self._anchor), self.step,
                             None if self.control is None else self.control.state())

    def roll_back(self, point: RollbackPoint) -> None:
        """Return exactly to ``point`` (made by ``rollback_point`` on this trainer)."""
        with torch.no_grad():
            for name, param in self._trainable:
                param.copy_(point.weights[name])
        self.optimizer.load_state_dict(point.optimizer)
        self._anchor = point.anchor
        self.step = point.step
        if self.control is not None and point.control is not None:
            self.control.restore(point.control)

    # ------------------------------------------------------------------ optimiser state
    def optimizer_moments(self) -> Moments:
        """AdamW's ``exp_avg`` / ``exp_avg_sq`` as flat float32, in adapter-vector order."""
        return read_moments(self.optimizer, self._trainable)

    def load_optimizer_moments(self, exp_avg: np.ndarray, exp_avg_sq: np.ndarray) -> None:
        """Replace the moments (checked first); each parameter keeps its own step count."""
        load_moments(self.optimizer, self._trainable, exp_avg, exp_avg_sq)

    def averaging_vector(self, with_moments: bool) -> np.ndarray:
        """What this peer contributes to a group average (``moment_averaging`` layout)."""
        adapter, _ = flatten_state(self.adapter_state())
        moments = self.optimizer_moments() if with_moments else None
        return moment_averaging.encode(adapter, moments, self.train_settings.max_grad_norm)

    def load_averaging_vector(self, vector: np.ndarray, with_moments: bool) -> None:
        """Apply a group average made of ``averaging_vector``s: adapter, then moments.

        Everything is decoded and checked before the adapter is replaced, so a bad
        vector changes nothing.
        """
        adapter, manifest = flatten_state(self.adapter_state())
        own = self.optimizer_moments() if with_moments else None
        betas = self.optimizer.param_groups[0]["betas"]
        averaged = moment_averaging.decode(vector, adapter.size, own,
                                           self.train_settings.max_grad_norm,
                                           (float(betas[0]), float(betas[1])))
        self.load_adapter_state(unflatten_state(averaged.adapter, manifest))
        if averaged.exp_avg is not None and averaged.exp_avg_sq is not None:
            self.load_optimizer_moments(averaged.exp_avg, averaged.exp_avg_sq)

    # ------------------------------------------------------------------ persistence
    def save_checkpoint(self, directory: Path, round: int) -> None:
        """Adapter (PEFT safetensors), optimiser, step, data position and RNG, atomically."""
        directory = Path(directory)
        trainer_state: dict[str, Any] = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "stream": self.stream.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "anchor": {n: t.cpu() for n, t in self._anchor.items()},
            # PEFT's adapter files hold LoRA only; the ownership mark's scale deltas ride here
            "scale_deltas": self._scale_deltas(),
        }
        if torch.cuda.is_available():
            trainer_state["cuda_rng"] = torch.cuda.get_rng_state_all()

        def fill(tmp: Path) -> None:
            try:
                self.model.save_pretrained(str(tmp / "adapter"))
                torch.save(trainer_state, tmp / "trainer_state.pt")
            except OSError:
                raise
            except Exception as exc:
                # safetensors (SafetensorError) and torch.save (RuntimeError "unexpected
                # pos") report a full disk as their own types: make it an OSError so the
                # caller gets a CheckpointError and the previous checkpoint stays LATEST.
                free = shutil.disk_usage(tmp).free
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise OSError(f"{detail} ({free} bytes free on that file system)") from exc

        meta = {"format": CHECKPOINT_FORMAT, "round": int(round), "step": self.step,
                "base_model": self.model_settings.path,
                "adapter_fingerprint": state_fingerprint(self.adapter_state())}
        save_round(directory, round, fill, meta)

    def _load_checkpoint_weights(self, directory: Path
                                 ) -> tuple[Path, dict[str, Any], dict[str, Any]]:
        """Load the newest checkpoint's adapter (and ownership scale deltas) into the model;
        returns its folder, metadata and trainer state for ``load_checkpoint`` to finish."""
        path, meta = open_latest(Path(directory), CHECKPOINT_FORMAT, "a LoRA trainer's")
        try:
            adapter = load_file(str(path / "adapter" / ADAPTER_FILE))
            state = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=True)
        except Exception as exc:  # safetensors and pickle raise many types
            raise CheckpointError(f"{path}: unreadable checkpoint files: {exc}") from exc
        current = get_peft_model_state_dict(self.model)
        if {k: tuple(v.shape) for k, v in adapter.items()} != \
                {k: tuple(v.shape) for k, v in current.items()}:
            raise CheckpointError(f"{path}: adapter does not match this model/LoRA config")
        try:
            set_peft_model_state_dict(self.model, adapter)
            self._load_scale_deltas(state.get("scale_deltas", {}))
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise CheckpointError(f"{path}: checkpoint does not fit this trainer: {exc}") from exc
        return path, meta, state

    def load_checkpoint(self, directory: Path) -> int:
        """Restore the newest complete checkpoint under ``directory``; returns its round."""
        path, meta, state = self._load_checkpoint_weights(Path(directory))
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.stream.load_state_dict(state["stream"])
            self._anchor = {n: t.to(self.input_device) for n, t in state["anchor"].items()}
            torch.set_rng_state(state["torch_rng"])
            if "cuda_rng" in state and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda_rng"])
            self.step = int(state["step"])
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise CheckpointError(f"{path}: checkpoint does not fit this trainer: {exc}") from exc
        return int(meta["round"])

    def _scale_deltas(self) -> dict[str, torch.Tensor]:
        """The trainable tensors PEFT does not save (ownership scale deltas), on CPU."""
        return {n: p.detach().cpu().clone() for n, p in self._trainable
                if DELTA_MARKER in n}

    def _load_scale_deltas(self, deltas: dict[str, torch.Tensor]) -> None:
        expected = {n: p for n, p in self._trainable if DELTA_MARKER in n}
        if set(deltas) != set(expected):
            raise ValueError("ownership scale deltas differ from this trainer's "
                             f"({len(deltas)} saved, {len(expected)} expected)")
        with torch.no_grad():
            for name, tensor in deltas.items():
                expected[name].copy_(tensor.to(expected[name].device))

    def export_adapter(self, out_dir: Path, model_card: str | None = None) -> None:
        """Write a standard PEFT adapter dir (``PeftModel.from_pretrained`` loads it).

        ``model_card`` replaces the README.md PEFT writes (a blank template) with one
        that says how the adapter was made; the daemon writes it (learning does not
        know the federation).
        """
        out_dir = Path(out_dir)
        meta = {"round_step": self.step, "base_model": self.model_settings.path,
                "adapter_fingerprint": state_fingerprint(self.adapter_state())}

        def fill(tmp: Path) -> None:
            self.model.save_pretrained(str(tmp))
            if self.mark is not None:
                from fedswarm.learning.ownership.embedding import exported_deltas

                save_file(exported_deltas(self.model), str(tmp / SCALE_DELTAS_FILE))
            if model_card is not None:
                (tmp / "README.md").write_text(model_card, encoding="utf-8")

        try:
            write_atomic_dir(out_dir, fill, meta)
        except OSError as exc:
            raise ExportError(f"{out_dir}: cannot export adapter: {exc}") from exc

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def generate(self, prompts: list[str], max_new_tokens: int = 32) -> list[str]:
        """Greedy completions of ``prompts`` (deterministic, for demos and smoke tests)."""
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        return self._greedy([bos + list(self.tokenizer(p, add_special_tokens=False)["input_ids"])
                             for p in prompts], max_new_tokens)

    @torch.no_grad()
    def sample_outputs(self, n: int, max_new_tokens: int) -> list[tuple[str, str]]:
        """``(prompt, continuation)`` for the first ``n`` eval examples, greedy.

        The prompt is what the model is asked to continue: the part of an instruction
        or chat example before the first trained (response) token, or the first
        ``TEXT_PROMPT_TOKENS`` tokens of a text block. Deterministic for a given
        adapter, so rounds can be compared; fewer than ``n`` pairs when the eval set
        is smaller, none without eval data or when ``n`` is 0.
        """
        if n < 0:
            raise ValueError("n: must be >= 0")
        if max_new_tokens <= 0:
            raise ValueError("max_new_tokens: must be positive")
        prompts = [self._prompt_ids(example) for example in self.data.eval[:n]]
        outputs = self._greedy(prompts, max_new_tokens)
        return [(self.tokenizer.decode(ids, skip_special_tokens=True), out)
                for ids, out in zip(prompts, outputs, strict=True)]

    def _prompt_ids(self, example: Example) -> list[int]:
        if self.data.format == "text":
            return example.input_ids[:TEXT_PROMPT_TOKENS]
        first_trained = next((i for i, label in enumerate(example.labels)
                              if label != IGNORE_INDEX), len(example.labels))
        return example.input_ids[:max(first_trained, 1)]

    def _greedy(self, encoded: list[list[int]], max_new_tokens: int) -> list[str]:
        """Left-pad token id lists, decode greedily, return the new text of each row."""
        if not encoded:
            return []
        was_training = self.model.training
        self.model.eval()
        width = max(len(e) for e in encoded)
        pad = int(self.tokenizer.pad_token_id)
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
        try:
            out = self.model.generate(input_ids=ids.to(self.input_device),
                                      attention_mask=mask.to(self.input_device),
                                      max_new_tokens=max_new_tokens, do_sample=False,
                                      pad_token_id=pad)
        finally:
            self.model.train(was_training)
        return [self.tokenizer.decode(row[width:], skip_special_tokens=True) for row in out]


def draw_shared_lora_a(model: torch.nn.Module, *, freeze: bool = False) -> int:
    """Set every ``lora_A`` to a draw from ``SHARED_A_SEED``; with ``freeze``, freeze it.

    Why one draw for everyone: B starts at zero, so the members' first updates are
    ``B_i·A_i``. Averaging A and B separately is close to the average of the products
    only when the A matrices are close; drawn from each member's own seed they are
    independent, the cross terms cancel and round 1's average keeps about 1/k of what
    the group learnt. (PEFT's own init also ran on the model's device, so a CPU member
    and a GPU member drew different A from the same seed.)

    With ``freeze`` (FFA-LoRA) only B trains and travels: half the bytes, and the
    average of the members' ``B·A`` is exactly ``mean(B)·A``. The draw is PEFT's own
    init (Kaiming uniform, a = sqrt(5)) made on the CPU, so it does not depend on the
    device. Returns how many A matrices were drawn; none (another PEFT type) is only an
    error when freezing was asked for.
    """
    generator = torch.Generator().manual_seed(SHARED_A_SEED)
    drawn = 0
    with torch.no_grad():
        for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
            if ".lora_A." not in name:
                continue
            draw = torch.empty(param.shape, dtype=torch.float32)
            bound = 1.0 / math.sqrt(param.shape[1]) if param.dim() > 1 else 1.0
            draw.uniform_(-bound, bound, generator=generator)
            param.copy_(draw.to(param.device, param.dtype))
            if freeze:
                param.requires_grad_(False)
            drawn += 1
    if freeze and drawn == 0:
        raise LearningError("freeze_lora_a needs a LoRA adapter (lora.peft_type = \"LORA\"): "
                            "this model has no lora_A weights")
    return drawn
