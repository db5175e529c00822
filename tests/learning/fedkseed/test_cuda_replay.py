"""On a machine with CUDA: a GPU member replays a K-vector to the CPU member's bytes.

Skipped without CUDA (CI has none). The claim it checks is the reason directions are
+-1 signs drawn on the CPU (learning/fedkseed/perturbation.py): replaying the same
K-vector on a GPU and on a CPU gives bit-identical weights.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from fedswarm.learning.fedkseed import KSeedTrainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_a_gpu_replay_equals_the_cpu_replay(make_kseed: Callable[..., KSeedTrainer]) -> None:
    cpu = make_kseed(device="cpu")
    cpu.train()
    vector, fingerprint = cpu.adapter_snapshot()
    gpu = make_kseed(device="cuda")
    assert gpu.tensors[0].param.device.type == "cuda"
    gpu.load_adapter_vector(vector)
    cpu.load_adapter_vector(vector)  # the canonical replay on the CPU
    assert gpu.adapter_fingerprint() == fingerprint
    assert gpu.parameters_fingerprint() == cpu.parameters_fingerprint()
    gpu.train(2)  # zeroth-order steps run on the GPU too
