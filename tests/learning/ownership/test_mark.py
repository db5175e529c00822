"""Ownership marks: disjoint shares, the sign loss, verification, and what carries them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from fedswarm.learning.errors import MarkCapacityError, NoNormLayersError, OwnershipError
from fedswarm.learning.ownership import (
    MarkPlan,
    OwnershipKey,
    attach_mark,
    effective_scales,
    member_share,
    norm_modules,
    norm_widths,
    verify_model,
    verify_scales,
)
from fedswarm.learning.ownership.verify import load_suspect
from fedswarm.learning.settings import OwnershipSettings
from fedswarm.learning.trainer import SCALE_DELTAS_FILE, LocalTrainer
from safetensors.torch import load_file

ROSTER = ("bank-a", "bank-b", "bank-c")
SETTINGS = OwnershipSettings(enabled=True, bits=16, margin=0.1)


def key(n: int) -> OwnershipKey:
    return OwnershipKey(bytes([n]) * 32)


def plan(member: str = "bank-a", n: int = 1) -> MarkPlan:
    return MarkPlan(SETTINGS, key(n), ROSTER, member)


def test_members_shares_are_disjoint_and_cover_every_channel() -> None:
    shares = [member_share(480, list(ROSTER), m, 64).channels for m in ROSTER]
    together = np.concatenate(shares)
    assert len(together) == 480 and len(set(together.tolist())) == 480


def test_every_member_computes_the_same_split_whatever_the_roster_order() -> None:
    a = member_share(480, ["bank-c", "bank-a", "bank-b"], "bank-b", 64).channels
    b = member_share(480, list(ROSTER), "bank-b", 64).channels
    assert np.array_equal(a, b)


def test_more_bits_than_a_members_share_is_refused_with_the_numbers() -> None:
    with pytest.raises(MarkCapacityError, match="480 normalisation channels shared by 3"):
        member_share(480, list(ROSTER), "bank-a", 200)


def test_a_layer_wide_shift_of_the_scales_does_not_move_any_reading() -> None:
    """A thief's norm retraining moves a layer's scales together; the readout ignores that."""
    from fedswarm.learning.ownership import derive_signature

    widths = [96, 96, 96]
    signature = derive_signature(key(1), member_share(widths, list(ROSTER), "bank-a", 16), 16)
    delta = torch.randn(288)
    shifted = delta + torch.repeat_interleave(torch.tensor([0.5, -0.3, 2.0]), 96)
    assert torch.allclose(signature.readings(delta), signature.readings(shifted), atol=1e-5)


def test_the_task_moves_only_the_members_own_scales_and_none_of_its_readings() -> None:
    """What the task may change of the scales: its own share, orthogonally to every bit."""
    from fedswarm.learning.ownership import MarkLoss, derive_signature, install_scale_deltas

    model = torch.nn.Sequential(torch.nn.Linear(8, 96), torch.nn.LayerNorm(96),
                                torch.nn.Linear(96, 96), torch.nn.LayerNorm(96))
    deltas = install_scale_deltas(model)
    share = member_share([96, 96], list(ROSTER), "bank-a", 16)
    mark = MarkLoss(deltas, derive_signature(key(1), share, 16), weight=1.0, margin=0.0)
    for delta in deltas:
        delta.grad = torch.randn_like(delta)
    mark.replace_gradients()  # margin 0 at Δ = 0: the sign loss adds nothing
    grad = torch.cat([d.grad for d in deltas if d.grad is not None])
    others = np.setdiff1d(np.arange(192), share.channels)
    assert not grad[torch.as_tensor(others)].any()
    assert grad[torch.as_tensor(share.channels)].abs().sum() > 1.0
    assert mark.signature.readings(grad).abs().max() < 1e-4


def test_a_model_without_normalisation_layers_is_refused_in_one_line() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with pytest.raises(NoNormLayersError, match="no RMSNorm/LayerNorm scale") as info:
        attach_mark(model, plan())
    assert "\n" not in str(info.value)


def test_the_scale_deltas_join_the_averaged_vector_small_and_centred(
        make_trainer: Callable[..., LocalTrainer], demo_model_dir: Path,
        demo_shard_dir: Path) -> None:
    plain = make_trainer()
    marked = marked_trainer(demo_model_dir, demo_shard_dir, plan())
    channels = effective_scales(marked.model).numel()
    assert marked.adapter_size == plain.adapter_size + channels
    deltas = {n: t for n, t in marked.adapter_state().items() if "ownership_delta" in n}
    assert sum(t.numel() for t in deltas.values()) == channels
    assert not any(bool(t.any()) for t in deltas.values())  # zero: the base scales at start


def test_training_writes_the_mark_the_right_key_reads_and_a_wrong_one_does_not(
        demo_model_dir: Path, demo_shard_dir: Path) -> None:
    trainer = marked_trainer(demo_model_dir, demo_shard_dir, plan())
    base = effective_scales(trainer.model)
    assert trainer.train(40).mark_detected == 1.0
    marked = effective_scales(trainer.model)
    assert not torch.equal(marked, base)
    widths = norm_widths(trainer.model)
    right = verify_scales(marked, base, key(1), list(ROSTER), "bank-a", SETTINGS.bits, widths)
    assert right.detected == 1.0
    wrong = [verify_scales(marked, base, key(n), list(ROSTER), "bank-a", SETTINGS.bits,
                           widths).detected
             for n in range(2, 8)]
    assert max(wrong) < 0.9 and 0.2 < float(np.mean(wrong)) < 0.8


def test_averaging_two_members_keeps_both_marks(demo_model_dir: Path,
                                                demo_shard_dir: Path) -> None:
    """Disjoint shares: averaging does not cancel one member's mark with another's."""
    a = marked_trainer(demo_model_dir, demo_shard_dir, plan("bank-a", 1))
    b = marked_trainer(demo_model_dir, demo_shard_dir, plan("bank-b", 2))
    base = effective_scales(a.model)
    for _ in range(4):
        a.train(15)
        b.train(15)
        average = (a.adapter_vector() + b.adapter_vector()) / 2
        a.load_adapter_vector(average)
        b.load_adapter_vector(average)
    scales = effective_scales(a.model)
    for member, n in (("bank-a", 1), ("bank-b", 2)):
        assert verify_scales(scales, base, key(n), list(ROSTER), member,
                             SETTINGS.bits, norm_widths(a.model)).detected == 1.0


def test_checkpoints_and_exports_carry_the_scale_deltas(demo_model_dir: Path,
                                                        demo_shard_dir: Path,
                                                        tmp_path: Path) -> None:
    trainer = marked_trainer(demo_model_dir, demo_shard_dir, plan())
    trainer.train(10)
    trainer.save_checkpoint(tmp_path / "ckpt", round=1)
    trainer.export_adapter(tmp_path / "export")
    assert set(load_file(str(tmp_path / "export" / SCALE_DELTAS_FILE))) == {
        name for name, _ in norm_modules(trainer.model)}
    restored = marked_trainer(demo_model_dir, demo_shard_dir, plan())
    restored.load_checkpoint(tmp_path / "ckpt")
    assert restored.adapter_fingerprint() == trainer.adapter_fingerprint()


def test_an_exported_adapter_verifies_against_the_base_and_only_with_the_right_key(
        demo_model_dir: Path, demo_shard_dir: Path, tmp_path: Path) -> None:
    trainer = marked_trainer(demo_model_dir, demo_shard_dir, plan())
    assert trainer.train(40).mark_detected == 1.0
    trainer.export_adapter(tmp_path / "export")
    suspect = load_suspect(demo_model_dir, adapter_dir=tmp_path / "export")
    base = load_suspect(demo_model_dir, model_dir=demo_model_dir)
    assert torch.allclose(effective_scales(suspect), effective_scales(trainer.model))
    assert verify_model(suspect, base, key(1), list(ROSTER), "bank-a", 16).detected == 1.0
    assert verify_model(base, base, key(1), list(ROSTER), "bank-a", 16).detected == 0.0
    assert verify_model(suspect, base, key(9), list(ROSTER), "bank-a", 16).detected < 0.9


def test_a_corrupt_scale_deltas_file_is_a_clear_error_naming_it(
        demo_model_dir: Path, demo_shard_dir: Path, tmp_path: Path) -> None:
    trainer = marked_trainer(demo_model_dir, demo_shard_dir, plan())
    trainer.export_adapter(tmp_path / "export")
    deltas = tmp_path / "export" / SCALE_DELTAS_FILE
    deltas.write_bytes(deltas.read_bytes()[:40])  # truncated in transit
    with pytest.raises(OwnershipError, match=SCALE_DELTAS_FILE):
        load_suspect(demo_model_dir, adapter_dir=tmp_path / "export")


def marked_trainer(model_dir: Path, shard_dir: Path, mark: MarkPlan) -> LocalTrainer:
    from fedswarm.learning.settings import DataSettings, LoraSettings, ModelSettings, TrainSettings

    shard = next(shard_dir.glob("peer-0-*"))
    return LocalTrainer(
        ModelSettings(str(model_dir)), LoraSettings(r=4, alpha=8),
        DataSettings(str(shard / "train.jsonl"), str(shard / "eval.jsonl"), max_length=64),
        TrainSettings(local_steps=3, batch_size=4, lr=3e-3, eval_batches=2),
        ownership=mark)


def test_under_dp_sgd_the_mark_is_written_too(demo_model_dir: Path,
                                              demo_shard_dir: Path) -> None:
    """The sign loss reads no data, so it joins after DP-SGD's noise and costs no ε."""
    from fedswarm.learning.settings import (
        DataSettings,
        LoraSettings,
        ModelSettings,
        PrivacySettings,
        TrainSettings,
    )

    shard = next(demo_shard_dir.glob("peer-0-*"))
    trainer = LocalTrainer(
        ModelSettings(str(demo_model_dir)), LoraSettings(r=4, alpha=8),
        DataSettings(str(shard / "train.jsonl"), str(shard / "eval.jsonl"), max_length=64,
                     packing=False),
        TrainSettings(batch_size=4, lr=3e-3, total_steps=100),
        privacy=PrivacySettings(enabled=True, target_epsilon=50.0), ownership=plan())
    assert trainer.train(30).mark_detected == 1.0
