"""The model owner's side: turn a group's averaged vector into its full model, export it.

The owner never trains and never sends its full weights. Each round it loads the
averaged adapter vector into its own copy of the emulator (the same loader the members
use, so the vector's layout agrees), reads the adapter layers back as full-model layer
weights, and plugs them into the full model, which it can then export.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from fedswarm.learning.adapter_vector import flatten_state, unflatten_state
from fedswarm.learning.model_loading import load_base_model, load_tokenizer
from fedswarm.learning.offsite.emulator import load_emulator
from fedswarm.learning.offsite.layers import adapter_layer_weights, plug_in
from fedswarm.learning.offsite.package import OffsitePackage
from fedswarm.learning.offsite.trainer import LORA_INIT_SEED
from fedswarm.learning.settings import LoraSettings, ModelSettings


class OwnerModel:
    """The full model plus the emulator codec that reads averaged adapter vectors."""

    def __init__(
        self,
        full_model_dir: Path,
        package: OffsitePackage,
        lora: LoraSettings | None = None,
        *,
        device: str = "auto",
    ) -> None:
        self.package = package
        settings = ModelSettings(str(full_model_dir), dtype="float32", device=device)
        self.tokenizer = load_tokenizer(settings)
        self.model, _ = load_base_model(settings)
        self.emulator = load_emulator(package, lora, seed=LORA_INIT_SEED, device=device)
        self._names = sorted(n for n, p in self.emulator.named_parameters() if p.requires_grad)
        params = dict(self.emulator.named_parameters())
        self.initial_vector = flatten_state(
            {n: params[n].detach().to("cpu", torch.float32) for n in self._names}
        )[0]
        """The package's adapter layers as a vector: round 0, before anyone trained."""
        self.vector = self.initial_vector.copy()
        """The adapter layers plugged in now (``plug_in_vector`` replaces it)."""
        self.exported: np.ndarray | None = None
        """The vector plugged in at the last ``export`` (None: not exported yet)."""

    def plug_in_vector(self, vector: np.ndarray) -> None:
        """Load an averaged vector into the emulator and its layers into the full model."""
        params = dict(self.emulator.named_parameters())
        _, manifest = flatten_state(
            {n: params[n].detach().to("cpu", torch.float32) for n in self._names}
        )
        state = unflatten_state(vector, manifest)
        with torch.no_grad():
            for name in self._names:
                params[name].copy_(state[name].to(params[name].device))
        plug_in(
            self.model,
            adapter_layer_weights(self.emulator, self.package.layout),
            self.package.layout,
        )
        self.vector = np.asarray(vector, np.float32).copy()

    def export(self, out_dir: Path) -> None:
        """``save_pretrained`` the plugged-in full model, atomically (temp sibling + rename)."""
        out_dir = Path(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.export-", dir=out_dir.parent))
        try:
            self.model.save_pretrained(tmp)  # type: ignore[operator]
            self.tokenizer.save_pretrained(tmp)
            if out_dir.exists():
                shutil.rmtree(out_dir)
            os.replace(tmp, out_dir)
            self.exported = self.vector.copy()
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
