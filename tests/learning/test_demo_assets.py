"""The demo's data is non-IID per peer and its model is a real, cached HF model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fedswarm.learning.demo_assets import DEMO_DOMAINS, MARKER, build_demo_model, write_demo_shards
from fedswarm.learning.errors import LearningError
from transformers import AutoModelForCausalLM, AutoTokenizer


def test_at_least_eight_domains() -> None:
    assert len(set(DEMO_DOMAINS)) >= 8


def test_each_peer_gets_one_domain_and_shared_domains_are_split(tmp_path: Path) -> None:
    n = len(DEMO_DOMAINS) + 1
    shards = write_demo_shards(tmp_path, n)
    assert [s.domain for s in shards[: len(DEMO_DOMAINS)]] == list(DEMO_DOMAINS)
    first, repeat = shards[0].train_path.read_text(), shards[-1].train_path.read_text()
    assert shards[-1].domain == shards[0].domain
    assert first and repeat and not set(first.splitlines()) & set(repeat.splitlines())
    other = shards[1].train_path.read_text()
    assert DEMO_DOMAINS[0] in first and DEMO_DOMAINS[0] not in other


def test_eval_all_covers_every_domain(tmp_path: Path) -> None:
    write_demo_shards(tmp_path, 2)
    text = (tmp_path / "eval_all.jsonl").read_text()
    rows = [json.loads(line)["text"] for line in text.splitlines()]
    for domain in DEMO_DOMAINS:
        assert any(f"In {domain}," in r or domain in r for r in rows), domain


def test_demo_model_loads_with_auto_classes_and_is_reused(demo_model_dir: Path) -> None:
    marker = (demo_model_dir / MARKER).read_text()
    tokenizer = AutoTokenizer.from_pretrained(str(demo_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(demo_model_dir))
    assert model.config.model_type == "llama" and tokenizer.chat_template
    meta = json.loads(marker)
    assert build_demo_model(demo_model_dir, pretrain_steps=meta["pretrain_steps"]) == demo_model_dir
    assert (demo_model_dir / MARKER).read_text() == marker  # not rebuilt


def test_foreign_directory_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(LearningError, match="not overwriting"):
        build_demo_model(tmp_path, pretrain_steps=1)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_build_reports_each_phase_and_step_and_restores_the_caller_settings(
    tmp_path: Path,
) -> None:
    """A cold build was 7 minutes of silence; it now says what it does, step by step."""
    import torch
    from transformers.utils import logging as transformers_logging

    heard: list[str] = []
    threads = torch.get_num_threads()
    bars = transformers_logging.is_progress_bar_enabled()
    build_demo_model(tmp_path / "model", pretrain_steps=3, on_progress=heard.append)
    assert heard[0].startswith("training the byte_bpe tokenizer")
    steps = [line for line in heard if line.startswith("pre-training step ")]
    assert steps[0] == "pre-training step 0/3"
    assert [s.split(" (")[0] for s in steps[1:]] == [f"pre-training step {i}/3" for i in (1, 2, 3)]
    assert heard[-1] == "saving the model"
    assert torch.get_num_threads() == threads
    assert transformers_logging.is_progress_bar_enabled() == bars
    heard.clear()
    build_demo_model(tmp_path / "model", pretrain_steps=3, on_progress=heard.append)
    assert heard == []  # reused: nothing to report
