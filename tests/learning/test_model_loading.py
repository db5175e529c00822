"""Operator mistakes in the model config give a ModelLoadError that names the path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fedswarm.learning.errors import ModelLoadError
from fedswarm.learning.model_loading import (
    detect_target_modules,
    load_base_model,
    load_tokenizer,
    resolve_placement,
)
from fedswarm.learning.settings import LoraSettings, ModelSettings, TrainSettings
from transformers import AutoModelForCausalLM


def test_missing_directory_names_the_path(tmp_path: Path) -> None:
    path = str(tmp_path / "no-such-model")
    with pytest.raises(ModelLoadError, match="no-such-model"):
        load_base_model(ModelSettings(path))


def test_directory_without_config_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8)
    with pytest.raises(ModelLoadError, match=str(tmp_path)):
        load_tokenizer(ModelSettings(str(tmp_path)))


def test_unknown_architecture_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-arch-xyz"}))
    with pytest.raises(ModelLoadError, match=str(tmp_path)):
        load_base_model(ModelSettings(str(tmp_path)))


def test_hub_id_is_refused_when_offline() -> None:
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        load_base_model(ModelSettings("some-org/some-model"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_4bit_on_cpu_is_a_clear_error(demo_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="CUDA"):
        load_base_model(ModelSettings(str(demo_model_dir), load_in_4bit=True))


def test_auto_placement_on_cpu_is_float32(demo_model_dir: Path) -> None:
    placement = resolve_placement(ModelSettings(str(demo_model_dir), device="cpu"))
    assert placement.dtype == torch.float32 and placement.device.type == "cpu"


def test_target_modules_detected_for_llama(demo_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(str(demo_model_dir))
    assert set(detect_target_modules(model)) >= {"q_proj", "v_proj"}


def test_target_modules_fall_back_to_linear_scan(demo_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(str(demo_model_dir))
    setattr(model.config, "model_type", "unknown-for-peft")  # noqa: B010
    found = detect_target_modules(model)
    assert "lm_head" not in found and {"q_proj", "down_proj"} <= set(found)


@pytest.mark.parametrize(("factory", "field"), [
    (lambda: LoraSettings(r=0), "lora.r"),
    (lambda: LoraSettings(peft_type="prefix"), "lora.peft_type"),
    (lambda: TrainSettings(schedule="step"), "train.schedule"),  # type: ignore[arg-type]
    (lambda: ModelSettings(""), "model.path"),
])
def test_invalid_settings_name_the_field(factory: object, field: str) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        factory()  # type: ignore[operator]
