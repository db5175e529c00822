"""Building and opening the package the owner sends: emulator, adapters, layout, manifest.

The package is a plain Hugging Face model directory of the *emulator* (bottom adapter
layers, ``keep`` sampled middle layers, top adapter layers; embeddings, final norm and
head as in the full model) plus ``offsite.json`` (the layout) and the manifest. A member
loads it with the ordinary loaders once :func:`open_package` has checked every hash; the
owner's full weights never enter it, only the layers :class:`OffsiteLayout` names.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fedswarm.learning.errors import OffsiteError, TamperedPackageError
from fedswarm.learning.offsite.layout import OffsiteLayout
from fedswarm.learning.offsite.manifest import verify_package_files, write_manifest
from fedswarm.learning.offsite.settings import DistillSettings

LAYOUT_FILE = "offsite.json"
PACKAGE_FORMAT = 1


@dataclass(frozen=True)
class OffsitePackage:
    """A verified package on disk: where, its id (the manifest's sha256) and its layout."""

    path: Path
    package_id: str
    layout: OffsiteLayout


def open_package(package_dir: Path, expected_id: str | None = None) -> OffsitePackage:
    """Verify every file by hash, then read the layout; ``TamperedPackageError`` if not whole."""
    package_dir = Path(package_dir)
    package_id = verify_package_files(package_dir, expected_id)
    try:
        meta = json.loads((package_dir / LAYOUT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TamperedPackageError(f"{package_dir}: unreadable {LAYOUT_FILE} ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != PACKAGE_FORMAT:
        raise OffsiteError(f"{package_dir}: not an offsite package of format {PACKAGE_FORMAT}")
    return OffsitePackage(package_dir, package_id, OffsiteLayout.from_json(meta.get("layout")))


def build_package(
    model_dir: Path,
    out_dir: Path,
    *,
    keep: int,
    bottom: int,
    top: int,
    distill: DistillSettings | None = None,
    distill_texts: list[str] | None = None,
) -> OffsitePackage:
    """Cut the emulator out of the owner's model in ``model_dir`` and write the package.

    With ``distill.steps > 0`` the kept middle layers are first distilled towards the full
    model's middle on ``distill_texts`` (``distill.py``).

    Written in a temporary sibling and renamed into place, so an interrupted build never
    leaves a half package; a non-empty ``out_dir`` is refused rather than overwritten.
    """
    import torch
    from fedswarm.learning.model_loading import load_tokenizer
    from fedswarm.learning.offsite.layers import decoder_layers
    from fedswarm.learning.settings import ModelSettings
    from transformers import AutoModelForCausalLM

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise OffsiteError(f"{out_dir}: exists and is not empty; not overwriting")
    settings = ModelSettings(str(model_dir))
    tokenizer = load_tokenizer(settings)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    layers = decoder_layers(model)
    layout = OffsiteLayout(len(layers), bottom, top, keep)
    chosen = layout.emulator_to_full()
    kept = torch.nn.ModuleList([layers[i] for i in chosen])
    for new_index, layer in enumerate(kept):
        attention = getattr(layer, "self_attn", None)
        if attention is not None and hasattr(attention, "layer_idx"):
            attention.layer_idx = new_index  # the KV cache is indexed by position
    model.get_decoder().layers = kept
    model.config.num_hidden_layers = layout.emulator_layers
    layer_types = getattr(model.config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == layout.total:
        model.config.layer_types = [layer_types[i] for i in chosen]

    distill = distill or DistillSettings()
    distilled: dict[str, object] = {"steps": distill.steps}
    if distill.steps > 0:
        from fedswarm.learning.offsite.distill import distill_middle, text_blocks

        if not distill_texts:
            raise OffsiteError("distillation asked for, but no text to distil on")
        teacher = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        blocks = text_blocks(tokenizer, distill_texts, distill.seq_len)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(distill.seed)
            final = distill_middle(teacher, model, layout, blocks, distill)
        distilled["final_mse"] = round(final, 6)
        del teacher

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.build-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        meta = {
            "format": PACKAGE_FORMAT,
            "layout": layout.to_json(),
            "emulated_from": chosen,
            "distillation": distilled,
        }
        (tmp / LAYOUT_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        package_id = write_manifest(tmp)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return OffsitePackage(out_dir, package_id, layout)
