"""Ownership triggers: a key's secret prompts, what training teaches, what others read."""

from __future__ import annotations

from pathlib import Path

import pytest
from fedswarm.learning.errors import OwnershipError
from fedswarm.learning.ownership import MarkPlan, OwnershipKey
from fedswarm.learning.ownership.triggers import (
    derive_triggers,
    trigger_accuracy,
    triggers_for,
)
from fedswarm.learning.settings import (
    DataSettings,
    LoraSettings,
    ModelSettings,
    OwnershipSettings,
    PrivacySettings,
    TrainSettings,
)
from fedswarm.learning.trainer import LocalTrainer

ROSTER = ("bank-a", "bank-b")


def key(n: int) -> OwnershipKey:
    return OwnershipKey(bytes([n]) * 32)


def test_one_key_always_gives_the_same_triggers_and_another_key_others() -> None:
    first = derive_triggers(key(1), 16, 1024, [0, 1, 2], bos_id=1)
    assert first == derive_triggers(key(1), 16, 1024, [0, 1, 2], bos_id=1)
    other = derive_triggers(key(2), 16, 1024, [0, 1, 2], bos_id=1)
    assert first.prompts != other.prompts and first.targets != other.targets


def test_triggers_start_with_bos_and_never_use_special_tokens_after_it() -> None:
    triggers = derive_triggers(key(1), 64, 50, [0, 1, 2, 3], bos_id=1)
    assert all(p[0] == 1 for p in triggers.prompts)
    used = {t for p in triggers.prompts for t in p[1:]} | set(triggers.targets)
    assert used.isdisjoint({0, 1, 2, 3}) and max(used) < 50


def test_targets_come_from_the_rarer_later_half_of_the_vocabulary() -> None:
    triggers = derive_triggers(key(1), 256, 1024, [0, 1, 2], bos_id=1)
    assert min(triggers.targets) >= 513  # usable ids 3..1023: the later half starts at 513
    assert min(t for p in triggers.prompts for t in p[1:]) < 513  # prompts use them all


def test_the_trigger_set_does_not_show_itself_in_a_repr() -> None:
    triggers = derive_triggers(key(1), 8, 1024, [], bos_id=None)
    assert repr(triggers) == "TriggerSet(count=8)"


def test_triggers_outside_off_or_four_to_1024_are_refused() -> None:
    with pytest.raises(ValueError, match=r"ownership\.triggers: must be 0"):
        OwnershipSettings(enabled=True, triggers=2)


def trainer(model_dir: Path, shard_dir: Path, triggers: int, *,
            privacy: PrivacySettings | None = None) -> LocalTrainer:
    shard = next(shard_dir.glob("peer-0-*"))
    settings = OwnershipSettings(enabled=True, bits=16, margin=0.1, triggers=triggers,
                                 trigger_weight=1.0)
    return LocalTrainer(
        ModelSettings(str(model_dir)), LoraSettings(r=4, alpha=8),
        DataSettings(str(shard / "train.jsonl"), str(shard / "eval.jsonl"), max_length=64,
                     packing=privacy is None),
        TrainSettings(batch_size=4, lr=3e-3, total_steps=200),
        privacy=privacy, ownership=MarkPlan(settings, key(1), ROSTER, "bank-a"))


def test_a_trained_in_trigger_set_is_answered_and_other_keys_and_the_base_are_not(
        demo_model_dir: Path, demo_shard_dir: Path) -> None:
    marked = trainer(demo_model_dir, demo_shard_dir, triggers=8)
    own = triggers_for(key(1), 8, marked.tokenizer)
    before = trigger_accuracy(marked.model, own)
    marked.train(100)
    assert trigger_accuracy(marked.model, own) >= 0.75
    assert before <= 0.125  # the base: chance is 1 in ~1000 per trigger
    others = [trigger_accuracy(marked.model, triggers_for(key(n), 8, marked.tokenizer))
              for n in range(2, 6)]
    assert max(others) <= 0.125


def test_triggers_under_dp_sgd_are_refused_in_one_line(demo_model_dir: Path,
                                                       demo_shard_dir: Path) -> None:
    with pytest.raises(OwnershipError, match="not supported with \\[privacy\\]") as info:
        trainer(demo_model_dir, demo_shard_dir, triggers=8,
                privacy=PrivacySettings(enabled=True, target_epsilon=50.0))
    assert "\n" not in str(info.value)


def test_without_triggers_training_adds_no_trigger_term(demo_model_dir: Path,
                                                       demo_shard_dir: Path) -> None:
    assert trainer(demo_model_dir, demo_shard_dir, triggers=0).triggers is None
