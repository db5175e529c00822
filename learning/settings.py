"""Configuration dataclasses for local training.

They are plain dataclasses so the daemon can build them straight from its TOML config
and so tests can construct them in one line. Each validates itself in
``__post_init__`` and raises ``ValueError`` naming the offending field, because a typo
in a config file should fail at start-up, not in the middle of round 12.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DtypeName = Literal["auto", "float32", "bfloat16", "float16"]
DataFormat = Literal["auto", "text", "instruction", "chat"]
ScheduleName = Literal["cosine", "linear", "constant"]

_DTYPES = ("auto", "float32", "bfloat16", "float16")
_FORMATS = ("auto", "text", "instruction", "chat")
_SCHEDULES = ("cosine", "linear", "constant")
# PEFT methods whose config takes (r, alpha, dropout, target_modules) the way LoRA does.
SUPPORTED_PEFT_TYPES = ("LORA", "LOHA", "LOKR")
# Generation samples are a dashboard aid: a few short greedy completions per round.
MAX_SAMPLES_PER_ROUND = 16
MAX_SAMPLE_NEW_TOKENS = 256


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ValueError(f"{field}: {message}")


@dataclass
class ModelSettings:
    """Which base model to load and where to put it.

    ``path`` is a local directory written by ``save_pretrained`` (or a hub id, used
    only when the machine is online). ``device="auto"`` picks CUDA when present and
    spreads a model over several GPUs with accelerate's ``device_map="auto"``.
    """

    path: str
    dtype: DtypeName = "auto"
    device: str = "auto"
    load_in_4bit: bool = False
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        _require(isinstance(self.path, str) and self.path != "", "model.path", "must be set")
        _require(self.dtype in _DTYPES, "model.dtype", f"must be one of {_DTYPES}")
        _require(isinstance(self.device, str) and self.device != "", "model.device",
                 "must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")


@dataclass
class LoraSettings:
    """The adapter that is trained and averaged.

    ``target_modules=None`` asks for per-architecture detection, so the same config
    works for Llama, Mistral, GPT-2 or Qwen checkpoints.
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] | None = None
    peft_type: str = "LORA"

    def __post_init__(self) -> None:
        _require(isinstance(self.r, int) and self.r > 0, "lora.r", "must be a positive integer")
        _require(self.alpha > 0, "lora.alpha", "must be positive")
        _require(0.0 <= self.dropout < 1.0, "lora.dropout", "must be in [0, 1)")
        if self.target_modules is not None:
            _require(
                len(self.target_modules) > 0
                and all(isinstance(m, str) and m for m in self.target_modules),
                "lora.target_modules",
                "must be a non-empty list of module names, or unset for auto-detection",
            )
        self.peft_type = self.peft_type.upper()
        _require(self.peft_type in SUPPORTED_PEFT_TYPES, "lora.peft_type",
                 f"must be one of {SUPPORTED_PEFT_TYPES}")


@dataclass
class DataSettings:
    """Where the private data lives and how it becomes token blocks.

    Without ``eval_path`` a deterministic ``eval_fraction`` of the training rows is
    held out, so every peer still reports an eval loss.
    """

    train_path: str
    eval_path: str | None = None
    eval_fraction: float = 0.1
    format: DataFormat = "auto"
    max_length: int = 256
    packing: bool = True

    def __post_init__(self) -> None:
        _require(isinstance(self.train_path, str) and self.train_path != "",
                 "data.train_path", "must be set")
        _require(0.0 <= self.eval_fraction < 1.0, "data.eval_fraction", "must be in [0, 1)")
        _require(self.format in _FORMATS, "data.format", f"must be one of {_FORMATS}")
        _require(isinstance(self.max_length, int) and self.max_length >= 8,
                 "data.max_length", "must be an integer >= 8")


@dataclass
class AlignmentSettings:
    """``[data.alignment]``: safe demonstrations every member mixes into local training.

    ``path`` is a JSONL file of ``{"text": ...}`` rows (FedMKT's public-set format) whose
    content hash must equal ``sha256`` (the same check as FedMKT's ``public_sha256``), so
    every member mixes the same rows; ``share`` is the fraction of each epoch's training
    examples drawn from it (docs/safety.md).
    """

    path: str = ""
    sha256: str = ""
    share: float = 0.1

    def __post_init__(self) -> None:
        _require(0.0 < self.share < 1.0, "share", "must be in (0, 1)")
        _require(not self.path or bool(self.sha256.strip()), "sha256",
                 "missing (required with path: every member must mix the same set; "
                 "a mismatch prints the file's hash)")

    @property
    def enabled(self) -> bool:
        return bool(self.path)


@dataclass
class TrainSettings:
    """Optimisation hyper-parameters for one peer.

    ``total_steps`` is the length of the learning-rate schedule over the whole
    federation (all rounds). When it is ``None`` the federation is open-ended, so the
    rate stays constant after warm-up whatever ``schedule`` says.

    ``samples_per_round`` and ``sample_max_new_tokens`` are the arguments the round
    loop passes to ``LocalTrainer.sample_outputs`` for the dashboard's generation
    samples (greedy completions of the first eval prompts); 0 samples turns it off.
    """

    local_steps: int = 20
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 2e-4
    warmup_steps: int = 0
    schedule: ScheduleName = "cosine"
    total_steps: int | None = None
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    seed: int = 0
    fedprox_mu: float = 0.0
    eval_batches: int | None = None
    samples_per_round: int = 2
    sample_max_new_tokens: int = 32

    def __post_init__(self) -> None:
        _require(self.local_steps > 0, "train.local_steps", "must be positive")
        _require(self.batch_size > 0, "train.batch_size", "must be positive")
        _require(self.grad_accum > 0, "train.grad_accum", "must be positive")
        _require(self.lr > 0, "train.lr", "must be positive")
        _require(self.warmup_steps >= 0, "train.warmup_steps", "must be >= 0")
        _require(self.schedule in _SCHEDULES, "train.schedule", f"must be one of {_SCHEDULES}")
        if self.total_steps is not None:
            _require(self.total_steps > 0, "train.total_steps", "must be positive or unset")
        _require(self.max_grad_norm > 0, "train.max_grad_norm", "must be positive")
        _require(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        _require(self.fedprox_mu >= 0, "train.fedprox_mu", "must be >= 0")
        if self.eval_batches is not None:
            _require(self.eval_batches > 0, "train.eval_batches", "must be positive or unset")
        _require(0 <= self.samples_per_round <= MAX_SAMPLES_PER_ROUND, "train.samples_per_round",
                 f"must be in [0, {MAX_SAMPLES_PER_ROUND}] (0 = no samples)")
        _require(0 < self.sample_max_new_tokens <= MAX_SAMPLE_NEW_TOKENS,
                 "train.sample_max_new_tokens", f"must be in [1, {MAX_SAMPLE_NEW_TOKENS}]")


@dataclass
class PrivacySettings:
    """Record-level differential privacy (DP-SGD) for this peer's adapter.

    With ``enabled`` every optimiser step clips each training example's gradient to
    ``max_grad_norm`` and adds Gaussian noise of ``noise_multiplier × max_grad_norm``;
    Opacus's RDP accountant adds up what the steps spend. ``delta`` unset means
    1 / (the number of training examples). ``noise_multiplier`` unset is derived so that
    ``train.total_steps`` steps spend exactly ``target_epsilon``. Training stops when the
    next step would spend more than ``target_epsilon`` (docs/privacy.md).
    """

    enabled: bool = False
    target_epsilon: float = 8.0
    delta: float | None = None
    max_grad_norm: float = 1.0
    noise_multiplier: float | None = None
    accountant: str = "rdp"  # "rdp" or "prv": Opacus's RDPAccountant or PRVAccountant
    # Group-level (distributed) DP inside secure aggregation (docs/privacy.md): on when
    # group_noise_multiplier is set. Each member clips its round's change to
    # group_update_clip (L2) and adds integer noise so the group's sum is DP with respect
    # to one member's whole change, for up to `colluders` members who pool their noise.
    group_noise_multiplier: float | None = None
    group_update_clip: float = 0.1
    colluders: int = 0
    group_target_epsilon: float | None = None  # unset: accounted and shown, not enforced
    group_delta: float = 1e-5

    @property
    def group_dp(self) -> bool:
        return self.group_noise_multiplier is not None

    def __post_init__(self) -> None:
        _require(self.accountant in ("rdp", "prv"), "privacy.accountant",
                 "must be 'rdp' or 'prv' (Opacus's RDP or PRV accountant)")
        if self.group_noise_multiplier is not None:
            _require(0 < self.group_noise_multiplier < float("inf"),
                     "privacy.group_noise_multiplier",
                     "must be a finite number > 0, or unset for no group-level DP")
        _require(0 < self.group_update_clip < float("inf"), "privacy.group_update_clip",
                 "must be a finite number > 0")
        _require(isinstance(self.colluders, int) and self.colluders >= 0, "privacy.colluders",
                 "must be an integer >= 0")
        if self.group_target_epsilon is not None:
            _require(0 < self.group_target_epsilon < float("inf"),
                     "privacy.group_target_epsilon", "must be a finite number > 0, or unset")
        _require(0 < self.group_delta < 1, "privacy.group_delta", "must be in (0, 1)")
        _require(0 < self.target_epsilon < float("inf"), "privacy.target_epsilon",
                 "must be a finite number > 0")
        if self.delta is not None:
            _require(0 < self.delta < 1, "privacy.delta", "must be in (0, 1), or unset for 1/n")
        _require(0 < self.max_grad_norm < float("inf"), "privacy.max_grad_norm",
                 "must be a finite number > 0")
        if self.noise_multiplier is not None:
            _require(0 < self.noise_multiplier < float("inf"), "privacy.noise_multiplier",
                     "must be a finite number > 0, or unset to derive it from target_epsilon")


#: Why ``[ownership] triggers`` and ``[privacy]`` are refused together, in the words both
#: ``fedswarm config check`` and ``LocalTrainer`` use.
TRIGGERS_WITH_PRIVACY = ("[ownership] triggers is not supported with [privacy] enabled "
                         "(DP-SGD would not cover the trigger term); set triggers = 0 or "
                         "disable [privacy]")


@dataclass
class OwnershipSettings:
    """FedIPR-style ownership mark: this member's secret bits in the normalisation scales.

    With ``enabled`` the scales of every RMSNorm/LayerNorm become trainable (as a delta on
    the base scale, so they join the averaged vector small and centred) and a hinge loss
    ``weight · Σ ReLU(margin − b ⊙ (Pᵀ Δγ))`` pushes this member's share of them to
    encode ``bits`` secret bits; ``key_file`` (mode 0600, made by ``fedswarm init``) holds
    the secret that derives the bits and the projection P (docs/ownership.md).

    ``triggers`` > 0 adds a black-box mark: that many key-derived random-token prompts
    whose key-derived target token every local step trains, with ``trigger_weight``
    (``ownership.triggers``). Refused with [privacy]: DP-SGD would not cover them.
    """

    enabled: bool = False
    key_file: str = "ownership.key"
    bits: int = 32
    weight: float = 1.0
    margin: float = 0.15
    triggers: int = 0
    trigger_weight: float = 0.01

    def __post_init__(self) -> None:
        _require(isinstance(self.key_file, str) and self.key_file != "", "ownership.key_file",
                 "must be set")
        _require(isinstance(self.bits, int) and 8 <= self.bits <= 1024, "ownership.bits",
                 "must be an integer in [8, 1024]")
        _require(0 < self.weight < float("inf"), "ownership.weight",
                 "must be a finite number > 0")
        _require(0 < self.margin < float("inf"), "ownership.margin",
                 "must be a finite number > 0")
        _require(isinstance(self.triggers, int) and (self.triggers == 0
                                                     or 4 <= self.triggers <= 1024),
                 "ownership.triggers", "must be 0 (off) or an integer in [4, 1024]")
        _require(0 < self.trigger_weight < float("inf"), "ownership.trigger_weight",
                 "must be a finite number > 0")
