"""Load a base causal LM and its tokenizer, then wrap it with a PEFT adapter.

Loading is where most operator mistakes show up (wrong path, a tokenizer-only folder,
an architecture this transformers version does not know, 4-bit asked for on a laptop),
so every failure here becomes a ``ModelLoadError`` that names the path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from fedswarm.learning.errors import ModelLoadError
from fedswarm.learning.settings import LoraSettings, ModelSettings
from peft import LoHaConfig, LoKrConfig, LoraConfig, PeftModel, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase


@dataclass
class Placement:
    """Where and in which precision the model lives, decided once at load time."""

    dtype: torch.dtype
    device: torch.device
    device_map: str | None  # "auto" when accelerate spreads the model over several GPUs


def resolve_placement(settings: ModelSettings) -> Placement:
    """Pick device and dtype: bf16 on a GPU that supports it, fp32 everywhere else.

    fp16 is only used when asked for explicitly, because LoRA training in fp16 needs
    loss scaling and diverges easily without it.
    """
    if settings.device == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda", 0)
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = torch.device("mps")
        else:
            device = torch.device("cpu")
    else:
        try:
            device = torch.device(settings.device)
        except RuntimeError as exc:
            raise ModelLoadError(f"{settings.path}: unknown device {settings.device!r}") from exc
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError(
                f"{settings.path}: device {settings.device!r} asked for but CUDA is not available")
    if settings.dtype != "auto":
        dtype = getattr(torch, settings.dtype)
    elif device.type == "cuda" and torch.cuda.is_bf16_supported():
        dtype = torch.bfloat16
    else:
        dtype = torch.float32
    multi_gpu = (settings.device == "auto" and device.type == "cuda"
                 and torch.cuda.device_count() > 1)
    return Placement(dtype=dtype, device=device, device_map="auto" if multi_gpu else None)


def _looks_like_local_path(path: str) -> bool:
    """Hub ids look like ``org/name``; anything absolute or explicitly relative is a path."""
    return path.startswith(("/", "./", "../", "~", ".")) or path.count("/") > 1


def _check_location(path: str) -> None:
    """Fail early, with the path in the message, when a local model dir is unusable."""
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ModelLoadError(f"{path}: is a file, expected a model directory")
        if not (p / "config.json").is_file():
            raise ModelLoadError(f"{path}: not a model directory (no config.json)")
        return
    if _looks_like_local_path(path):
        raise ModelLoadError(f"{path}: model directory does not exist")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelLoadError(f"{path}: not a local directory and HF_HUB_OFFLINE=1 forbids the hub")


def load_tokenizer(settings: ModelSettings) -> PreTrainedTokenizerBase:
    """The tokenizer, with a pad token guaranteed (many causal LMs ship without one)."""
    _check_location(settings.path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(Path(settings.path).expanduser()), trust_remote_code=settings.trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{settings.path}: cannot load tokenizer: {exc}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _quantization_config(settings: ModelSettings, placement: Placement) -> Any:
    """4-bit NF4 config for QLoRA; bitsandbytes is imported only when asked for."""
    if placement.device.type != "cuda":
        raise ModelLoadError(
            f"{settings.path}: load_in_4bit needs a CUDA GPU; this machine would run on "
            f"{placement.device.type}. Set model.load_in_4bit = false.")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError(
            f"{settings.path}: load_in_4bit needs bitsandbytes (pip install 'fedswarm[gpu]')"
        ) from exc
    from transformers import BitsAndBytesConfig

    compute = placement.dtype if placement.dtype != torch.float32 else torch.bfloat16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_compute_dtype=compute, bnb_4bit_use_double_quant=True)


def load_base_model(settings: ModelSettings) -> tuple[torch.nn.Module, Placement]:
    """Load the base model with the resolved placement; no adapter yet."""
    _check_location(settings.path)
    placement = resolve_placement(settings)
    path = str(Path(settings.path).expanduser())
    try:
        AutoConfig.from_pretrained(path, trust_remote_code=settings.trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{settings.path}: unknown or unreadable model config: {exc}") from exc
    kwargs: dict[str, Any] = {"dtype": placement.dtype,
                              "trust_remote_code": settings.trust_remote_code}
    if settings.load_in_4bit:
        kwargs["quantization_config"] = _quantization_config(settings, placement)
        kwargs["device_map"] = placement.device_map or {"": placement.device.index or 0}
    elif placement.device_map is not None:
        kwargs["device_map"] = placement.device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{settings.path}: cannot load model: {exc}") from exc
    if "device_map" not in kwargs:
        model.to(placement.device)  # type: ignore[arg-type]
    if settings.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model, placement


def detect_target_modules(model: torch.nn.Module) -> list[str]:
    """Module names to adapt when the config does not say.

    peft's own per-architecture table is used first (it knows e.g. ``c_attn`` for GPT-2);
    otherwise every distinct Linear leaf name except the output head is targeted, which
    is what LoRA papers call "all linear layers".
    """
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    known = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type or "")
    if known:
        return list(known)
    names: set[str] = set()
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        is_linear = isinstance(module, torch.nn.Linear) or type(module).__name__ in (
            "Linear4bit", "Linear8bitLt", "Conv1D")
        if is_linear and leaf not in ("lm_head", "embed_out", "output"):
            names.add(leaf)
    if not names:
        raise ModelLoadError(f"{model_type}: no Linear layers found to attach an adapter to")
    return sorted(names)


def attach_adapter(model: torch.nn.Module, lora: LoraSettings) -> PeftModel:
    """Wrap the base model with a fresh, trainable PEFT adapter."""
    targets = lora.target_modules or detect_target_modules(model)
    config: LoraConfig | LoHaConfig | LoKrConfig
    if lora.peft_type == "LORA":
        config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            target_modules=targets, task_type="CAUSAL_LM")
    elif lora.peft_type == "LOHA":
        config = LoHaConfig(r=lora.r, alpha=lora.alpha, module_dropout=lora.dropout,
                            target_modules=targets, task_type="CAUSAL_LM")
    else:
        config = LoKrConfig(r=lora.r, alpha=lora.alpha, module_dropout=lora.dropout,
                            target_modules=targets, task_type="CAUSAL_LM")
    try:
        peft_model = get_peft_model(model, config)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ModelLoadError(f"cannot attach {lora.peft_type} to modules {targets}: {exc}") from exc
    return peft_model  # type: ignore[return-value]
