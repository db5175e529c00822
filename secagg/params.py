"""Parameters of the BFV + pairwise-mask + Shamir protocol, and their security check."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from fedswarm.secagg.distributed_dp import DDP_FIELDS_PER_SLOT, GroupNoise
from fedswarm.secagg.errors import ParameterSecurityError

PROTOCOL_V2 = "bfv-mask-shamir-v2"
PROTOCOL_V3 = "bfv-mask-shamir-v3"
PROTOCOLS = (PROTOCOL_V2, PROTOCOL_V3)
PROTOCOL_NAME = PROTOCOL_V3
"""The protocol daemons run unless configured otherwise (``[federation] secure_aggregation``).

v3 since its measurements (docs/performance.md): a third of v2's member CPU and upload
for 0.2 % of union loss. ``SecAggParams()`` alone are still v2's parameters;
``params_for_protocol`` maps a protocol name to its parameters."""

MAX_PLAIN_MODULUS_BITS_V2 = 40
MAX_PLAIN_MODULUS_BITS_V3 = 48
"""v3's cap, measured: with N = 4096 and coefficient primes (60, 49), sums of up to 128
fresh ciphertexts decrypt exactly with a 48-bit batching plain modulus; 50 bits fails at
128 summands and 52 bits already at 16 (tests/secagg/test_packed_plain_modulus_noise.py
re-measures the largest group v3 allows, plus a 52-bit control that must fail)."""
MIN_NOISE_BITS_V3 = 12
"""First coefficient prime minus plain modulus bits that v3 requires (60 - 48 measured)."""
MAX_GROUP_V3 = 32
"""Largest group v3 sizes a grid for. Independent fresh noise adds like sqrt(summands), and
128 summands were measured to decrypt at 48 bits: a group of 32 uses half that noise, one
bit of budget in reserve (the noise test checks both 32 and 128)."""
MAX_FIELDS_PER_SLOT = 4

# Largest total coefficient-modulus bit count per ring dimension that still gives the
# stated classical security for a ternary secret, from the HomomorphicEncryption.org
# security standard (Albrecht et al., 2018, table 1), the table SEAL itself enforces.
HE_STANDARD_MAX_COEFF_BITS: dict[int, dict[int, int]] = {
    128: {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881},
    192: {1024: 19, 2048: 37, 4096: 75, 8192: 152, 16384: 305, 32768: 611},
    256: {1024: 14, 2048: 29, 4096: 58, 8192: 118, 16384: 237, 32768: 476},
}

ClipMode = Literal["coordinate", "l2"]
Quantisation = Literal["stochastic", "nearest"]


MAX_CHUNK_CIPHERTEXTS = 1024  # 64 MB of ciphertext per message at N = 4096


@dataclass(frozen=True)
class SecAggParams:
    """Knobs of one secure-aggregation round; every member of a group must use the same.

    clip_norm bounds what a member can contribute.  With clip_mode="coordinate" every
    coordinate is clamped to [-clip_norm, clip_norm]; with "l2" the whole update is scaled
    down to L2 norm <= clip_norm (which also bounds every coordinate by clip_norm).  The
    quantisation grid is sized from that per-coordinate bound, max_weight and the group
    size so that the sum of k members never wraps the plain modulus (BFV wraps silently).
    """

    poly_modulus_degree: int = 4096
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 49)
    plain_modulus_bits: int = 30
    clip_norm: float = 1.0
    clip_mode: ClipMode = "coordinate"
    quantisation: Quantisation = "stochastic"
    # Weights are the daemon's sample counts (push-sum masses): up to 65 536 samples pass
    # as they are; a weight is exact to 1/64.  Precision of the average scales with
    # sum(weights) / max_weight (QuantisationGrid.error_bound, AggregationResult.error_bound).
    max_weight: float = 65536.0
    weight_resolution: float = 1.0 / 64.0
    protocol: str = PROTOCOL_V2
    # v3 only: quantised values packed into each BFV slot (see quantise.QuantisationGrid)
    fields_per_slot: int = 1
    # ciphertexts per UPLOAD / SUM / RESULT chunk message (secagg/chunks.py): fixes every
    # chunk count from the vector length KEYS agreed, so a peer cannot claim another
    stream_chunk_ciphertexts: int = 128
    # v3 only: group-level DP, integer noise each member adds (distributed_dp.py);
    # set with with_group_noise, which also packs 2 fields of 24 bits per slot
    group_noise: GroupNoise | None = None

    @classmethod
    def v3(cls, **overrides: object) -> SecAggParams:
        """bfv-mask-shamir-v3: 48-bit plain modulus, 3 packed fields per slot, weight classes.

        Why these numbers: 3 fields of 16 bits fill a 48-bit slot, and each member gets
        a signed value of magnitude up to (2**15 - 1) // k (13 bits with the sign at
        k = 8, 14 at k = 4).  Measured on bench.quality --quick (4 peers): 3 fields cost
        0.17..0.24 % of union loss against plain averaging, 4 fields (12-bit fields,
        10 signed bits at k = 4) cost 4.7 % (docs/performance.md).
        """
        fields: dict[str, object] = {
            "protocol": PROTOCOL_V3,
            "plain_modulus_bits": MAX_PLAIN_MODULUS_BITS_V3,
            "fields_per_slot": 3,
        }
        fields.update(overrides)
        return cls(**fields)  # type: ignore[arg-type]

    def with_group_noise(self, noise: GroupNoise | None) -> SecAggParams:
        """These parameters with group-level DP noise (None: without).

        Why 2 fields per slot: v3's 16-bit fields hold k values of 13..14 bits and no
        room for noise; 24-bit fields hold the noise of k members (NOISE_TAIL standard
        deviations of the sum) and values on a grid far finer than the noise, for half
        again v3's upload (docs/privacy.md).
        """
        if noise is None:
            return self
        return replace(self, group_noise=noise, fields_per_slot=DDP_FIELDS_PER_SLOT)

    @property
    def packed(self) -> bool:
        """True for v3: weight classes, signed fields packed into slots."""
        return self.protocol == PROTOCOL_V3

    @property
    def slot_count(self) -> int:
        """Values per BFV ciphertext (batching packs one value per slot)."""
        return self.poly_modulus_degree

    def security_bits(self) -> int:
        """Classical security level (128, 192 or 256) these parameters reach, 0 if none."""
        total = sum(self.coeff_mod_bit_sizes)
        best = 0
        for level, table in sorted(HE_STANDARD_MAX_COEFF_BITS.items()):
            limit = table.get(self.poly_modulus_degree)
            if limit is not None and total <= limit:
                best = level
        return best

    def _validate_v3_modulus(self) -> None:
        if not 17 <= self.plain_modulus_bits <= MAX_PLAIN_MODULUS_BITS_V3:
            raise ParameterSecurityError(
                f"plain_modulus_bits must be in 17..{MAX_PLAIN_MODULUS_BITS_V3} "
                "(larger moduli measured to overflow the noise budget)"
            )
        if self.plain_modulus_bits + MIN_NOISE_BITS_V3 > self.coeff_mod_bit_sizes[0]:
            raise ParameterSecurityError(
                f"plain modulus needs {MIN_NOISE_BITS_V3} bits below the first coefficient "
                "prime: no noise budget left"
            )
        if not 1 <= self.fields_per_slot <= MAX_FIELDS_PER_SLOT:
            raise ParameterSecurityError(f"fields_per_slot must be in 1..{MAX_FIELDS_PER_SLOT}")

    def validate(self) -> None:
        """Raise ParameterSecurityError unless the parameters are safe and usable."""
        n = self.poly_modulus_degree
        if n not in HE_STANDARD_MAX_COEFF_BITS[128]:
            raise ParameterSecurityError(f"poly_modulus_degree {n} is not a supported power of two")
        if len(self.coeff_mod_bit_sizes) < 2 or any(
            not 20 <= b <= 60 for b in self.coeff_mod_bit_sizes
        ):
            raise ParameterSecurityError(
                f"coeff_mod_bit_sizes {self.coeff_mod_bit_sizes} needs >= 2 primes of 20..60 bits"
            )
        if self.security_bits() < 128:
            raise ParameterSecurityError(
                f"N={n} with {sum(self.coeff_mod_bit_sizes)} coefficient bits is below 128-bit "
                f"security (limit {HE_STANDARD_MAX_COEFF_BITS[128][n]} bits)"
            )
        if self.protocol not in PROTOCOLS:
            raise ParameterSecurityError(
                f"unknown protocol {self.protocol!r}: this member speaks {', '.join(PROTOCOLS)}"
            )
        if self.packed:
            self._validate_v3_modulus()
        else:
            if self.fields_per_slot != 1:
                raise ParameterSecurityError(f"{PROTOCOL_V2} packs one value per slot")
            if not 17 <= self.plain_modulus_bits <= MAX_PLAIN_MODULUS_BITS_V2:
                raise ParameterSecurityError(
                    f"plain_modulus_bits must be in 17..{MAX_PLAIN_MODULUS_BITS_V2}"
                )
            if self.plain_modulus_bits + 20 > self.coeff_mod_bit_sizes[0]:
                raise ParameterSecurityError(
                    "plain modulus too large for the first coefficient prime: no noise budget"
                )
        if not 1 <= self.stream_chunk_ciphertexts <= MAX_CHUNK_CIPHERTEXTS:
            raise ParameterSecurityError(
                f"stream_chunk_ciphertexts must be in 1..{MAX_CHUNK_CIPHERTEXTS}"
            )
        if self.group_noise is not None and (
            not self.packed or self.fields_per_slot != DDP_FIELDS_PER_SLOT
        ):
            raise ParameterSecurityError(
                f"group-level DP needs {PROTOCOL_V3} with {DDP_FIELDS_PER_SLOT} fields per "
                "slot (SecAggParams.with_group_noise)"
            )
        if not (self.clip_norm > 0 and self.clip_norm < float("inf")):
            raise ParameterSecurityError("clip_norm must be a positive finite number")
        if self.clip_mode not in ("coordinate", "l2"):
            raise ParameterSecurityError(f"unknown clip_mode {self.clip_mode!r}")
        if self.quantisation not in ("stochastic", "nearest"):
            raise ParameterSecurityError(f"unknown quantisation {self.quantisation!r}")
        if not (0 < self.weight_resolution <= self.max_weight < float("inf")):
            raise ParameterSecurityError("need 0 < weight_resolution <= max_weight < inf")


def params_for_protocol(protocol: str) -> SecAggParams:
    """The default parameters of a protocol named in ``[federation] secure_aggregation``."""
    if protocol == PROTOCOL_V3:
        return SecAggParams.v3()
    if protocol == PROTOCOL_V2:
        return SecAggParams()
    raise ParameterSecurityError(
        f"unknown protocol {protocol!r}: this member speaks {', '.join(PROTOCOLS)}"
    )


def _is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin, exact for n < 3.3e24 (far above any plain modulus)."""
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
    for p in small:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in small:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def batching_plain_modulus(poly_modulus_degree: int, bits: int) -> int:
    """Largest prime below 2**bits that is 1 mod 2N, so BFV batching (SIMD slots) works.

    Deterministic, so every member derives the same modulus from the same parameters.
    """
    step = 2 * poly_modulus_degree
    candidate = ((1 << bits) - 1) // step * step + 1
    while candidate > step:
        if candidate < (1 << bits) and _is_prime(candidate):
            return candidate
        candidate -= step
    raise ParameterSecurityError(f"no {bits}-bit batching prime for N={poly_modulus_degree}")
