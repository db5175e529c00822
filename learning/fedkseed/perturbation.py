"""Perturbation directions z_j, the same bytes on every device and in any chunking.

Why Rademacher signs (+-1) from Philox, and not ``torch.randn``:

* torch's CPU and CUDA normal samplers draw different numbers from the same seed, and
  numpy's normal sampler may change between numpy versions (NEP 19). Philox4x64 is a
  counter-based bit generator whose raw output numpy guarantees stable; the bits are
  drawn on the CPU and only then moved to the model's device.
* With z in {-1, +1}, ``w + a * z`` is ``w + a`` or ``w - a``: one correctly rounded
  fp32 addition whether or not the device fuses the multiply, so a replay gives
  bit-identical parameters on a CPU and on a GPU. A Gaussian z makes ``a * z`` round
  differently with and without FMA.
* E[z z^T] = I as for a Gaussian, so g z is an unbiased estimate of the gradient's
  projection as in FedKSeed/MeZO (SPSA uses the same directions).

Direction j on parameter tensor t is the Philox stream keyed by (seed_j, t), bit i of
it the sign of the tensor's i-th element (little-endian within each 64-bit word), so
any slice can be drawn on its own by starting at its counter.
"""

from __future__ import annotations

import numpy as np
import torch

_WORD_BITS = 64
_WORDS_PER_BLOCK = 4  # Philox4x64 yields four 64-bit words per counter step


def sign_bits(seed: int, tensor_index: int, start: int, count: int) -> np.ndarray:
    """Bits ``start .. start+count`` of direction ``seed`` on tensor ``tensor_index``
    (``uint8`` 0/1; 1 means +1)."""
    if start < 0 or count < 0:
        raise ValueError("start and count: must be >= 0")
    block_bits = _WORD_BITS * _WORDS_PER_BLOCK
    first_block = start // block_bits
    skip = start - first_block * block_bits
    words = -(-(skip + count) // _WORD_BITS)
    words = -(-words // _WORDS_PER_BLOCK) * _WORDS_PER_BLOCK
    generator = np.random.Philox(
        key=np.array([seed, tensor_index], dtype=np.uint64),
        counter=np.array([first_block, 0, 0, 0], dtype=np.uint64),
    )
    raw = generator.random_raw(words).astype("<u8", copy=False)
    bits = np.unpackbits(raw.view(np.uint8), bitorder="little")
    return bits[skip : skip + count]


_SIGNS = np.array([-1.0, 1.0], dtype=np.float32)


def direction(seed: int, tensor_index: int, numel: int, device: torch.device) -> torch.Tensor:
    """Direction ``seed``'s signs on one tensor as a flat float32 +-1 tensor on ``device``."""
    bits = sign_bits(seed, tensor_index, 0, numel)
    signs = torch.from_numpy(bits).to(device)
    return signs.to(torch.float32).mul_(2.0).sub_(1.0)
