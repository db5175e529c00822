"""The owner's package: the right layers in it, and refused when any byte changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from fedswarm.learning.offsite import OffsitePackage, TamperedPackageError, open_package
from fedswarm.learning.offsite.manifest import MANIFEST_FILE
from transformers import AutoModelForCausalLM


def test_emulator_holds_the_adapter_layers_and_every_other_middle_layer(
    deep_model_dir: Path, package: OffsitePackage
) -> None:
    full = AutoModelForCausalLM.from_pretrained(deep_model_dir, dtype=torch.float32)
    emulator = AutoModelForCausalLM.from_pretrained(package.path, dtype=torch.float32)
    assert emulator.config.num_hidden_layers == 6
    for emulated, source in enumerate(package.layout.emulator_to_full()):
        got = emulator.model.layers[emulated].state_dict()
        want = full.model.layers[source].state_dict()
        assert all(torch.equal(got[k], want[k]) for k in want)
    # Layer 3 and 5 of the full model are nowhere in the package.
    dropped = full.model.layers[3].mlp.down_proj.weight
    assert not any(
        torch.equal(layer.mlp.down_proj.weight, dropped) for layer in emulator.model.layers
    )


def test_an_untouched_package_opens_with_its_published_id(package: OffsitePackage) -> None:
    assert open_package(package.path, package.package_id).layout == package.layout


def _copy(package: OffsitePackage, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(package.path, out)
    return out


def test_a_flipped_weight_byte_is_refused_by_hash(package: OffsitePackage, tmp_path: Path) -> None:
    copy = _copy(package, tmp_path)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(TamperedPackageError, match=r"model\.safetensors does not match"):
        open_package(copy, package.package_id)


def test_an_added_file_or_a_rewritten_manifest_is_refused(
    package: OffsitePackage, tmp_path: Path
) -> None:
    copy = _copy(package, tmp_path)
    (copy / "extra.safetensors").write_bytes(b"x")
    with pytest.raises(TamperedPackageError, match="not in the manifest"):
        open_package(copy, package.package_id)
    (copy / "extra.safetensors").unlink()
    manifest = copy / MANIFEST_FILE
    manifest.write_text(manifest.read_text() + " ")
    with pytest.raises(TamperedPackageError, match="published"):
        open_package(copy, package.package_id)


def test_a_missing_file_is_refused(package: OffsitePackage, tmp_path: Path) -> None:
    copy = _copy(package, tmp_path)
    (copy / "config.json").unlink()
    with pytest.raises(TamperedPackageError, match="missing"):
        open_package(copy)
